"""Reading an open file's bytes from the store.

`RangeReader` serves each kernel read with one ranged GET. It is the seam for the
read-ahead prefetcher: anything with ``read(offset, size)`` and ``close()`` fits.
Every GET carries the ETag the file had when opened, so a file replaced while being
read fails with ESTALE instead of returning a mix of two versions.
"""

from __future__ import annotations

import errno
import logging
from typing import Protocol

from cwfs.store import ObjectStore, PreconditionFailed, StoreError

log = logging.getLogger(__name__)


class Reader(Protocol):
    async def read(self, offset: int, size: int) -> bytes: ...

    async def close(self) -> None: ...


class RangeReader:
    """One ranged GetObject per read, conditional on the ETag seen at open."""

    def __init__(self, store: ObjectStore, key: str, size: int, etag: str | None) -> None:
        self._store = store
        self._key = key
        self._size = size
        self._etag = etag

    async def read(self, offset: int, size: int) -> bytes:
        if size <= 0 or offset >= self._size:
            return b""
        end = min(offset + size, self._size) - 1
        try:
            return await self._store.get_range(self._key, offset, end, self._etag)
        except PreconditionFailed:
            log.error("%r changed in the store while open for reading (ETag was %s): reopen the file", self._key, self._etag)
            raise StoreError(errno.ESTALE, "GetObject", self._key, "PreconditionFailed", "object replaced while open") from None

    async def close(self) -> None:
        return None
