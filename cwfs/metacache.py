"""What we know about names: attributes and negative entries, each with a TTL.

Listings fill it, so ``ls -l`` after ``readdir`` needs no request per file; lookups
fill it on a miss. Entries expire after the configured TTL so changes made by other
clients become visible; our own changes update it at once.

A listed name costs one `Listing` entry: the listing answers for its names, so they
need no entry of their own, and attributes are kept as compact records
(`cwfs.records`): about 170 bytes per name, against 830 with an `Attrs` and a TTL
entry per path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, Literal

import trio
from cachetools import TTLCache

from cwfs.attrs import Attrs
from cwfs.listing import join
from cwfs.records import Record, pack, unpack

RECENT_FACTOR = 30  # a directory counts as listed lately for 30 TTLs


class Listing(MutableMapping[str, Attrs]):
    """One directory's entries by name, kept as compact records.

    ``complete`` is False while the listing is still being delivered: it then answers
    for the names it holds and says nothing of the others.
    """

    __slots__ = ("_records", "complete")

    def __init__(self, entries: Iterable[tuple[str, Attrs]] = (), complete: bool = True) -> None:
        self._records: dict[str, Record] = {name: pack(attrs) for name, attrs in entries}
        self.complete = complete

    def __getitem__(self, name: str) -> Attrs:
        return unpack(self._records[name])

    def __setitem__(self, name: str, attrs: Attrs) -> None:
        self._records[name] = pack(attrs)

    def __delitem__(self, name: str) -> None:
        del self._records[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, name: object) -> bool:
        return name in self._records

    def subdirectories(self) -> list[str]:
        """The names of the directories among the entries, in order."""
        return [
            name
            for name, record in self._records.items()
            if isinstance(record, Attrs) and record.is_dir
        ]

    def batches(self, size: int) -> Iterator[list[tuple[str, Attrs]]]:
        """The entries, ``size`` at a time: the records are unpacked only as they go out."""
        batch: list[tuple[str, Attrs]] = []
        for name, record in self._records.items():
            batch.append((name, unpack(record)))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


class MetadataCache:
    """Attributes, missing names and directory listings, bounded and expiring.

    ``maxsize`` bounds each of the three caches in entries (a listing counts as many
    entries as it has names), so memory stays proportional to it. Time is trio's
    clock, so that tests can run expiry on a `trio.testing.MockClock`.
    """

    timer = staticmethod(trio.current_time)

    def __init__(self, ttl: float, negative_ttl: float, maxsize: int) -> None:
        self.maxsize = maxsize
        self.ttl = ttl
        self.recent_window = max(ttl * RECENT_FACTOR, 1.0)  # what "lately" means: 30 TTLs
        self._attrs: TTLCache[str, Record] | None = (
            TTLCache(maxsize, ttl, self.timer) if ttl > 0 else None
        )
        self._missing: TTLCache[str, bool] | None = (
            TTLCache(maxsize, negative_ttl, self.timer) if negative_ttl > 0 else None
        )
        # Complete listings, for readdir and to tell missing names, expiring a TTL after
        # they were listed; and the same listings (and ones still being delivered)
        # answering for their names, their TTL starting again each time readdir hands
        # one out: ``ls -l`` stats each name right after reading it.
        self._listings: TTLCache[str, Listing] | None = None
        self._answering: TTLCache[str, Listing] | None = None
        if ttl > 0:
            self._listings = TTLCache(maxsize, ttl, self.timer, getsizeof=_entries)
            self._answering = TTLCache(maxsize, ttl, self.timer, getsizeof=_entries)
        # How many entries directories had when listed lately, kept well past the TTL.
        self._listed: TTLCache[str, int] | None = (
            TTLCache(maxsize, self.recent_window, self.timer) if ttl > 0 else None
        )

    @property
    def entries(self) -> int:
        """Names held (their own entries, missing names, those of complete listings),
        expired ones not yet dropped included."""
        caches = (self._attrs, self._missing, self._listings)
        return sum(int(cache.currsize) for cache in caches if cache is not None)

    @property
    def keeps_listings(self) -> bool:
        return self._listings is not None

    def recently_listed(self, directory: str) -> int | None:
        """The size of ``directory``'s listing if it was listed lately (its listing may have expired)."""
        return self._listed.get(directory) if self._listed is not None else None

    def get_listing(self, directory: str) -> Listing | None:
        """The complete listing of ``directory``, if known."""
        return self._listings.get(directory) if self._listings is not None else None

    def _answering_listing(self, directory: str) -> Listing | None:
        return self._answering.get(directory) if self._answering is not None else None

    def put_listing(self, directory: str, listing: Listing) -> bool:
        """Keep ``listing`` (complete, or being delivered); False if it is larger than
        the cache. Names it holds answer from it: an entry of their own with another
        version is older and is dropped."""
        if not self.keep_listing(directory, listing):
            return False
        if listing.complete and self._listings is not None:
            self._listings[directory] = listing
            if self._listed is not None:
                self._listed[directory] = len(listing)
        self._drop_superseded(directory, listing)
        return True

    def keep_listing(self, directory: str, listing: Listing) -> bool:
        """(Re)insert ``listing`` among those answering for their names: its TTL there
        starts now and its size, which may have grown, is counted again. False if it
        is now larger than the cache (it is dropped)."""
        if self._answering is None:
            return False
        try:
            self._answering[directory] = listing
        except ValueError:
            self.drop_listing(directory)
            return False
        return True

    def _drop_superseded(self, directory: str, listing: Listing) -> None:
        if not self._attrs:
            return
        for name in listing:
            path = join(directory, name)
            record = self._attrs.get(path)
            if record is not None:
                known = unpack(record)
                if not (known.exact and known.etag == listing[name].etag):
                    self._attrs.pop(path, None)

    def renew_listing(self, directory: str) -> Listing | None:
        """readdir is handing out names from the listing of ``directory``: it answers for
        its names a TTL from now (it is not listed again any later). None if there is
        no such listing, or it no longer fits."""
        listing = self._answering_listing(directory)
        if listing is None or not self.keep_listing(directory, listing):
            return None
        return listing

    def update_listing(self, directory: str, name: str, attrs: Attrs | None) -> None:
        """Add, replace (``attrs``) or remove (None) one name in cached listings, in place."""
        for listing in (self.get_listing(directory), self._answering_listing(directory)):
            if listing is None:
                continue
            if attrs is None:
                listing.pop(name, None)
            else:
                listing[name] = attrs

    def drop_listing(self, directory: str) -> None:
        """``directory`` changed here: its listing is fetched again next time."""
        for cache in (self._listings, self._answering):
            if cache is not None:
                cache.pop(directory, None)

    def get(self, path: str) -> Attrs | Literal[False] | None:
        """Cached attributes (its own entry first, then its directory's listing), False
        if the name is known to be missing, None if unknown."""
        if self._attrs is not None and (record := self._attrs.get(path)) is not None:
            return unpack(record)
        parent, _, name = path.rpartition("/")
        listing = self._answering_listing(parent)
        if listing is not None and (attrs := listing.get(name)) is not None:
            return attrs
        if self._missing is not None and path in self._missing:
            return False
        return None

    def put(self, path: str, attrs: Attrs) -> None:
        """Remember ``attrs``; a listing's view never replaces an exact entry of the same version."""
        if self._attrs is not None and not attrs.exact:
            record = self._attrs.get(path)
            known = None if record is None else unpack(record)
            if known is not None and known.exact and known.etag == attrs.etag:
                return
        if self._missing is not None:
            self._missing.pop(path, None)
        if self._attrs is not None:
            self._attrs[path] = pack(attrs)

    def put_missing(self, path: str) -> None:
        parent, _, name = path.rpartition("/")
        self.update_listing(parent, name, None)
        if self._attrs is not None:
            self._attrs.pop(path, None)
        if self._missing is not None:
            self._missing[path] = True

    def forget_below(self, directory: str) -> None:
        """Drop every entry below ``directory`` (after it moved as a whole)."""
        below = directory + "/"
        _pop_below(self._attrs, below)
        _pop_below(self._missing, below)
        _pop_below(self._listings, below)
        _pop_below(self._answering, below)

    def forget(self, path: str) -> None:
        if self._attrs is not None:
            self._attrs.pop(path, None)
        if self._missing is not None:
            self._missing.pop(path, None)


def _pop_below(cache: TTLCache[str, Any] | None, below: str) -> None:
    if cache is not None:
        for path in [p for p in cache.keys() if p.startswith(below)]:
            cache.pop(path, None)


def _entries(listing: Listing) -> int:
    return max(1, len(listing))
