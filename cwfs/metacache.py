"""What we know about names: attributes and negative entries, each with a TTL.

Listings fill it, so ``ls -l`` after ``readdir`` needs no request per file; lookups
fill it on a miss. Entries expire after the configured TTL so changes made by other
clients become visible; our own changes update it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from cachetools import TTLCache


@dataclass(frozen=True)
class Attrs:
    """The attributes of one name: a directory, or a file with size, mtime and ETag."""

    is_dir: bool
    size: int = 0
    mtime: float = 0.0
    etag: str | None = None


DIRECTORY = Attrs(is_dir=True)


class MetadataCache:
    """Positive and negative attribute entries keyed by path, bounded and expiring."""

    def __init__(self, ttl: float, negative_ttl: float, maxsize: int) -> None:
        self._attrs: TTLCache[str, Attrs] | None = TTLCache(maxsize, ttl) if ttl > 0 else None
        self._missing: TTLCache[str, bool] | None = TTLCache(maxsize, negative_ttl) if negative_ttl > 0 else None

    def get(self, path: str) -> Attrs | None | bool:
        """Cached attributes, False if the name is known to be missing, None if unknown."""
        if self._attrs is not None and (attrs := self._attrs.get(path)) is not None:
            return attrs
        if self._missing is not None and path in self._missing:
            return False
        return None

    def put(self, path: str, attrs: Attrs) -> None:
        if self._missing is not None:
            self._missing.pop(path, None)
        if self._attrs is not None:
            self._attrs[path] = attrs

    def put_missing(self, path: str) -> None:
        if self._attrs is not None:
            self._attrs.pop(path, None)
        if self._missing is not None:
            self._missing[path] = True

    def forget(self, path: str) -> None:
        if self._attrs is not None:
            self._attrs.pop(path, None)
        if self._missing is not None:
            self._missing.pop(path, None)
