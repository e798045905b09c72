"""What we know about names: attributes and negative entries, each with a TTL.

Listings fill it, so ``ls -l`` after ``readdir`` needs no request per file; lookups
fill it on a miss. Entries expire after the configured TTL so changes made by other
clients become visible; our own changes update it at once.
"""

from __future__ import annotations

from typing import Literal

import trio
from cachetools import TTLCache

from cwfs.attrs import Attrs

RECENT_FACTOR = 30  # a directory counts as listed lately for 30 TTLs


class MetadataCache:
    """Attributes, missing names and complete directory listings, bounded and expiring.

    ``maxsize`` bounds each of the three caches in entries (a listing counts as many
    entries as it has names), so memory stays proportional to it. Time is trio's
    clock, so that tests can run expiry on a `trio.testing.MockClock`.
    """

    timer = staticmethod(trio.current_time)

    def __init__(self, ttl: float, negative_ttl: float, maxsize: int) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self.recent_window = max(ttl * RECENT_FACTOR, 1.0)  # what "lately" means: 30 TTLs
        self._attrs: TTLCache[str, Attrs] | None = (
            TTLCache(maxsize, ttl, self.timer) if ttl > 0 else None
        )
        self._missing: TTLCache[str, bool] | None = (
            TTLCache(maxsize, negative_ttl, self.timer) if negative_ttl > 0 else None
        )
        self._listings: TTLCache[str, dict[str, Attrs]] | None = (
            TTLCache(maxsize, ttl, self.timer, getsizeof=lambda entries: max(1, len(entries)))
            if ttl > 0
            else None
        )
        # How many entries directories had when listed lately, kept well past the TTL.
        self._listed: TTLCache[str, int] | None = (
            TTLCache(maxsize, self.recent_window, self.timer) if ttl > 0 else None
        )

    @property
    def keeps_listings(self) -> bool:
        return self._listings is not None

    def recently_listed(self, directory: str) -> int | None:
        """The size of ``directory``'s listing if it was listed lately (its listing may have expired)."""
        return self._listed.get(directory) if self._listed is not None else None

    def get_listing(self, directory: str) -> dict[str, Attrs] | None:
        """The complete listing of ``directory`` (name -> attributes), if known."""
        return self._listings.get(directory) if self._listings is not None else None

    def put_listing(self, directory: str, entries: dict[str, Attrs]) -> None:
        if self._listings is None:
            return
        try:
            self._listings[directory] = entries
        except ValueError:
            return  # a listing larger than the whole cache is simply not kept
        if self._listed is not None:
            self._listed[directory] = len(entries)

    def update_listing(self, directory: str, name: str, attrs: Attrs | None) -> None:
        """Add, replace (``attrs``) or remove (None) one name in a cached listing, in place."""
        entries = self.get_listing(directory)
        if entries is None:
            return
        if attrs is None:
            entries.pop(name, None)
        else:
            entries[name] = attrs

    def drop_listing(self, directory: str) -> None:
        """``directory`` changed here: its listing is fetched again next time."""
        if self._listings is not None:
            self._listings.pop(directory, None)

    def get(self, path: str) -> Attrs | Literal[False] | None:
        """Cached attributes, False if the name is known to be missing, None if unknown."""
        if self._attrs is not None and (attrs := self._attrs.get(path)) is not None:
            return attrs
        if self._missing is not None and path in self._missing:
            return False
        return None

    def put(self, path: str, attrs: Attrs) -> None:
        """Remember ``attrs``; a listing's view never replaces an exact entry of the same version."""
        if self._attrs is not None and not attrs.exact:
            known = self._attrs.get(path)
            if known is not None and known.exact and known.etag == attrs.etag:
                return
        if self._missing is not None:
            self._missing.pop(path, None)
        if self._attrs is not None:
            self._attrs[path] = attrs

    def put_missing(self, path: str) -> None:
        if self._attrs is not None:
            self._attrs.pop(path, None)
        if self._missing is not None:
            self._missing[path] = True

    def forget_below(self, directory: str) -> None:
        """Drop every entry below ``directory`` (after it moved as a whole)."""
        below = directory + "/"
        for cache in (self._attrs, self._missing, self._listings):
            if cache is not None:
                for path in [p for p in cache.keys() if p.startswith(below)]:
                    cache.pop(path, None)

    def forget(self, path: str) -> None:
        if self._attrs is not None:
            self._attrs.pop(path, None)
        if self._missing is not None:
            self._missing.pop(path, None)
