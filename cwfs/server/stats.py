"""Per-endpoint, per-operation request counts and a bounded log of recent requests.

Counting requests is how tests assert on client behaviour (e.g. "a stat costs one
HeadObject"), since timing a Python S3 server says little.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .checksums import ALGORITHMS
from .ops import Target, environ_header

LOGGED_HEADERS = (
    "If-Match",
    "If-None-Match",
    "If-Modified-Since",
    "If-Unmodified-Since",
    "Range",
    "x-amz-rename-source",
    "x-amz-client-token",
    "x-amz-copy-source",
    "x-amz-sdk-checksum-algorithm",
    "x-amz-trailer",
    "x-amz-checksum-algorithm",
    "x-amz-checksum-type",
    "Content-Length",
    "Content-Type",
    "Expect",
)


def _checksum_info(environ: Mapping[str, object]) -> dict[str, Any]:
    """Which checksum the client sent or asked for (value headers, algorithm, mode)."""
    names = (
        k[5:].lower().replace("_", "-")
        for k in environ
        if isinstance(k, str) and k.startswith("HTTP_X_AMZ_CHECKSUM_")
    )
    headers = sorted(n for n in names if n.rsplit("-", 1)[-1].upper() in ALGORITHMS)
    trailer = environ_header(environ, "x-amz-trailer") or ""
    algorithm = (
        environ_header(environ, "x-amz-sdk-checksum-algorithm")
        or environ_header(environ, "x-amz-checksum-algorithm")
        or (headers[0].rsplit("-", 1)[-1] if headers else None)
        or (trailer.rsplit("-", 1)[-1] if trailer.startswith("x-amz-checksum-") else None)
    )
    return {
        "algorithm": algorithm.upper() if algorithm else None,
        "headers": headers,
        "trailer": trailer or None,
        "mode": environ_header(environ, "x-amz-checksum-mode"),
    }


def _user_metadata(environ: Mapping[str, object]) -> dict[str, str]:
    prefix = "HTTP_X_AMZ_META_"
    return {
        k[len(prefix) :].lower().replace("_", "-"): str(v)
        for k, v in environ.items()
        if isinstance(k, str) and k.startswith(prefix)
    }


def _signing_region(environ: Mapping[str, object]) -> str | None:
    """The region the request was signed for (its SigV4 credential scope)."""
    found = re.search(
        r"Credential=[^/,]+/\d{8}/([^/]+)/", str(environ.get("HTTP_AUTHORIZATION", ""))
    )
    return found[1] if found else None


class RequestStats:
    """Thread-safe counters and request log shared by all endpoints of one server."""

    def __init__(self, endpoints: list[str], log_size: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._endpoints = list(endpoints)
        self._counts: dict[str, Counter[str]] = {name: Counter() for name in endpoints}
        self._log: deque[dict[str, Any]] = deque(maxlen=log_size)
        self._seq = 0

    def begin(
        self, endpoint: str, op: str, method: str, target: Target, environ: Mapping[str, object]
    ) -> dict[str, Any]:
        """Count a request and open its log entry (status filled in by :meth:`finish`)."""
        headers = {h: v for h in LOGGED_HEADERS if (v := environ_header(environ, h)) is not None}
        with self._lock:
            self._seq += 1
            self._counts.setdefault(endpoint, Counter())[op] += 1
            entry = {
                "seq": self._seq,
                "time": time.time(),
                "endpoint": endpoint,
                "op": op,
                "method": method,
                "bucket": target.bucket,
                "key": target.key,
                "query": str(environ.get("QUERY_STRING", "")),
                "addressing": "virtual" if target.virtual else "path",
                "region": _signing_region(environ),
                "status": None,
                "failed": None,
                "fault": False,
                "error_code": None,
                "headers": headers,
                "checksum": _checksum_info(environ),
                "metadata": _user_metadata(environ),
                "body_bytes": 0,
                "body_complete": None,
            }
            self._log.append(entry)
        return entry

    @staticmethod
    def finish(
        entry: dict[str, Any], status: int, error_code: str | None = None, fault: bool | str = False
    ) -> None:
        """Close a log entry; ``fault`` is True (refused) or "after" (done, answer lost)."""
        entry["status"], entry["failed"] = status, status >= 400
        entry["error_code"], entry["fault"] = error_code, fault

    def counts(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {name: dict(counter) for name, counter in self._counts.items()}

    def requests(self, since: int = 0) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._log if e["seq"] > since]

    def reset(self) -> None:
        with self._lock:
            for counter in self._counts.values():
                counter.clear()
            self._log.clear()


class CountedBody:
    """A response body that notes in its log entry how many bytes were handed to the
    server (``body_bytes``) and, once closed, whether that was all of it
    (``body_complete``): a client that hangs up midway shows as incomplete."""

    def __init__(self, body: Iterable[bytes], entry: dict[str, Any]) -> None:
        self._body, self._entry, self._exhausted = body, entry, False

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            self._entry["body_bytes"] += len(chunk)
            yield chunk
        self._exhausted = True

    def close(self) -> None:
        self._entry["body_complete"] = self._exhausted
        close = getattr(self._body, "close", None)
        if close is not None:
            close()
