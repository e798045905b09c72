"""Choosing the read endpoint: LOTA, CoreWeave's in-cluster cache, when it answers.

There is no documented way to tell whether we run inside a CoreWeave cluster, so at
mount (``--lota auto``) we probe: does ``<bucket>.cwlota.com`` resolve and accept a
connection within a short timeout. Data reads then go to LOTA; metadata and writes
always go to the primary endpoint. If LOTA starts failing, reads fall back to the
primary endpoint with one log line and LOTA is tried again a minute later.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from urllib.parse import urlparse

import trio

from cwfs.errors import StoreError
from cwfs.store import ObjectStore

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 1.0
RETRY_AFTER = 60.0


def lota_address(endpoint: str, bucket: str, addressing_style: str) -> tuple[str, int]:
    """The host and port a request for ``bucket`` goes to at ``endpoint``."""
    parsed = urlparse(endpoint)
    host = parsed.hostname or ""
    if addressing_style == "virtual":
        host = f"{bucket}.{host}"
    return host, parsed.port or (443 if parsed.scheme == "https" else 80)


def reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether ``host`` resolves and accepts a TCP connection on ``port`` (blocking)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class ReadEndpoint:
    """Serves ranged reads from LOTA while it works, from the primary endpoint otherwise."""

    def __init__(self, primary: ObjectStore, lota: ObjectStore | None) -> None:
        self._primary = primary
        self._lota = lota
        self._lota_paused_until = 0.0

    @property
    def lota(self) -> ObjectStore | None:
        """The LOTA endpoint's store, if reads go there."""
        return self._lota

    @property
    def using_lota(self) -> bool:
        return self._lota is not None and trio.current_time() >= self._lota_paused_until

    async def get_range(
        self,
        key: str,
        start: int,
        end: int,
        etag: str | None,
        on_chunk: Callable[[int, bytes], bool] | None = None,
    ) -> list[bytes]:
        """`ObjectStore.get_range` from LOTA, or the primary endpoint (which may then
        deliver chunks LOTA already did: positions tell)."""
        if self._lota is not None and self.using_lota:
            try:
                return await self._lota.get_range(key, start, end, etag, on_chunk)
            except StoreError as exc:
                if exc.errno != errno.EIO:
                    raise  # a real answer about the object (missing, changed, denied)
                self._lota_paused_until = trio.current_time() + RETRY_AFTER
                log.warning(
                    "the LOTA endpoint failed (%s): reading from the primary endpoint, retrying LOTA in %.0fs",
                    exc,
                    RETRY_AFTER,
                )
        return await self._primary.get_range(key, start, end, etag, on_chunk)
