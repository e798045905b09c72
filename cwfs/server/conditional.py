"""Conditional writes (If-None-Match: * / If-Match) with CoreWeave's race behaviour.

Checks run under the server's mutation lock together with the write itself, so a
check can never be overtaken by another write. Independently, every write announces
itself in :class:`InFlightWrites` from the moment it arrives (before its body is read);
a *conditional* write that finds another write to the same key in flight is answered
409 ConditionalRequestConflict at once, which is what CoreWeave does.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from moto.s3.models import S3Backend

from .backend import current_key, etag_of, same_etag
from .responses import S3Error, precondition_failed


def is_conditional(headers: Mapping[str, str | None]) -> bool:
    """Whether a write carries a destination condition."""
    return headers.get("If-None-Match") is not None or headers.get("If-Match") is not None


class InFlightWrites:
    """Counts writes per (bucket, key) that have arrived but not finished."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._active: Counter[tuple[str, str]] = Counter()

    @contextmanager
    def writing(self, bucket: str, key: str, conditional: bool) -> Iterator[None]:
        """Register a write for its whole duration; conflict if conditional and not alone."""
        slot = (bucket, key)
        with self._lock:
            if conditional and self._active[slot]:
                raise S3Error(
                    409,
                    "ConditionalRequestConflict",
                    "A conflicting operation occurred. Retry the request.",
                    Key=key,
                )
            self._active[slot] += 1
        try:
            yield
        finally:
            with self._lock:
                self._active[slot] -= 1
                if not self._active[slot]:
                    del self._active[slot]


def check_destination(
    backend: S3Backend, bucket: str, key: str, headers: Mapping[str, str | None]
) -> None:
    """Enforce If-None-Match / If-Match on the object a write would replace.

    Call with the mutation lock held. If-None-Match accepts only ``*`` (CoreWeave and
    AWS answer 400 otherwise); If-Match on a missing key is 404 NoSuchKey as in S3.
    """
    if_none, if_match = headers.get("If-None-Match"), headers.get("If-Match")
    if if_none is None and if_match is None:
        return
    if if_none is not None and if_none.strip() != "*":
        raise S3Error(
            400, "InvalidRequest", "If-None-Match only accepts '*' on write operations", Key=key
        )
    existing = current_key(backend, bucket, key)
    if if_none is not None and existing is not None:
        raise precondition_failed("If-None-Match")
    if if_match is not None:
        if existing is None:
            raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key)
        if not same_etag(if_match, etag_of(existing)):
            raise precondition_failed("If-Match")
