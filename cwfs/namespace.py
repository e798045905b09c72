"""Paths, keys and what exists: lookups and listings over the store, through the cache.

A path is relative to the mount root ("" is the root, "a/b" a file or directory). A
directory is a key prefix: implicit (objects below it) or marked by a ``dir/`` object.
When both an object ``a`` and a prefix ``a/`` exist, the directory wins and the object
is hidden (logged once). An implicit directory whose last object was removed here stays
visible while the kernel holds it, as it would on a local disk.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import AsyncIterator, Container, Iterable, Iterator, MutableMapping
from typing import Literal

import trio
from cachetools import TTLCache

from cwfs.attrs import DIRECTORY, LINK_SUFFIX, Attrs, file_attrs, link_name
from cwfs.attrstore import AttrStore, known_of
from cwfs.changes import ChangeLog, touched
from cwfs.errors import FsError, NotEmpty, PreconditionFailed
from cwfs.listing import DelimitedNames, SubtreeListing, join
from cwfs.metacache import Listing, MetadataCache
from cwfs.statahead import Answer, StatAhead
from cwfs.store import ListPage, ObjectInfo, ObjectStore, WriteCondition
from cwfs.tasks import gather
from cwfs.walkahead import WalkAhead

log = logging.getLogger(__name__)

Entries = MutableMapping[str, Attrs]

NAME_MAX = 255
FLAT_LISTING_PAGES = 10  # list subtrees of up to 10,000 objects in one flat pass
PAGE_KEYS = 1000  # keys in a full ListObjectsV2 page
FLAT_LISTING_KEYS = FLAT_LISTING_PAGES * PAGE_KEYS
MISSES_BEFORE_LISTING = 3  # cache misses in one directory before it is listed instead
STARTED_LISTINGS = 64  # first pages kept from lookups, each up to 1,000 keys
RENEWALS_PER_TTL = 8  # how often a listing being handed out is renewed, at most


def invalid_name_reason(name: str) -> str | None:
    """Why ``name`` (one path component from a key) cannot be a file name, or None."""
    if name == "":
        return "empty path component"
    if name in (".", ".."):
        return f"'{name}' component"
    if "\0" in name:
        return "NUL byte"
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        return f"component longer than {NAME_MAX} bytes"
    return None


class Namespace:
    """Resolves paths to attributes and lists directories, filling the metadata cache."""

    def __init__(
        self,
        store: ObjectStore,
        cache: MetadataCache,
        prefix: str = "",
        exact_metadata: bool = False,
        known: AttrStore | None = None,
        background: trio.Nursery | None = None,
    ) -> None:
        self.store = store
        self.cache = cache
        self.prefix = prefix
        self.exact_metadata = exact_metadata  # a file seen only in a listing is looked up alone
        self.known = known  # exact attributes of versions seen before, kept across mounts
        self._changes = ChangeLog()
        self._heads: dict[str, trio.Event] = {}  # HeadObjects of listed files in flight
        self._stat_ahead = (
            StatAhead(self._head_ahead, background, cache.timer)
            if exact_metadata and background
            else None
        )
        self._reported: set[str] = set()
        self._background = background
        self._walk = WalkAhead(self._list_ahead, cache.timer, cache.recent_window, cache.ttl)
        self._ahead: dict[str, trio.Event] = {}  # first pages listed ahead of a walk, in flight
        # How lookups and directory reads were answered: from the cache ("hit", a
        # "negative" entry) or not ("miss"), for ``cwfs stats``.
        self.lookups: Counter[str] = Counter()
        self.dir_reads: Counter[str] = Counter()
        # The directory whose listing readdir renewed last, when, and that listing.
        self._renewal: tuple[str | None, float, Container[str]] = (None, 0.0, ())
        self._kept_dirs: set[str] = set()
        self._listing: dict[str, trio.Event] = {}
        # Lookups that missed the cache lately, and directories too large to list, by directory.
        self._misses: TTLCache[str, int] = TTLCache(cache.maxsize, cache.recent_window, cache.timer)
        self._too_large: TTLCache[str, bool] = TTLCache(
            cache.maxsize, cache.recent_window, cache.timer
        )
        # Directories whose subtree spans more than one listing page, lately.
        self._large: TTLCache[str, bool] = TTLCache(cache.maxsize, cache.recent_window, cache.timer)
        # Names that listings showed as directories, lately: a lookup of one after its
        # listing expired (``find`` walking a thousand directories outlasts the TTL)
        # starts listing it rather than asking HeadObject whether it is a file.
        self._dirs_lately: TTLCache[str, bool] = TTLCache(
            cache.maxsize, cache.recent_window, cache.timer
        )
        # First pages fetched by lookups, for the listing that usually follows (``ls -l``).
        self._started: TTLCache[str, SubtreeListing] = TTLCache(
            STARTED_LISTINGS, cache.ttl, cache.timer
        )

    def object_key(self, path: str) -> str:
        return self.prefix + path

    def dir_prefix(self, path: str) -> str:
        return self.prefix + path + "/" if path else self.prefix

    def _report_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._reported:
            self._reported.add(key)
            log.warning(message, *args)

    def _file_attrs(self, info: ObjectInfo) -> Attrs:
        """A file's attributes; a listing's view of a version known exactly gets them back."""
        attrs = file_attrs(info.size, int(info.mtime * 1e9), info.etag, info.metadata)
        if info.key.endswith("/"):  # a directory's marker object
            attrs = dataclasses.replace(attrs, is_dir=True, size=0)
            if info.size:
                self._report_once(
                    info.key,
                    "object %r holds %d bytes but is a directory's marker: the directory is "
                    "shown, the bytes are not readable through the mount",
                    info.key,
                    info.size,
                )
        elif info.key.endswith(LINK_SUFFIX) and link_name(info.key.rpartition("/")[2]):
            attrs = dataclasses.replace(attrs, link=LINK_SUFFIX)
        if self.known is None or info.etag is None:
            return attrs
        if attrs.exact:
            self.known.remember(info.key, known_of(attrs, info.etag))
        elif (known := self.known.recall(info.key, info.etag)) is not None:
            return dataclasses.replace(
                attrs,
                mtime_ns=known.mtime_ns,
                mode=known.mode,
                uid=known.uid,
                gid=known.gid,
                special=known.special,
                exact=True,
            )
        return attrs

    async def _page(
        self,
        prefix: str,
        token: str | None = None,
        delimiter: str = "/",
        start_after: str | None = None,
    ) -> ListPage:
        """One listing page, with what the attribute file knows of its objects loaded."""
        page = await self.store.list_page(prefix, token, delimiter, start_after=start_after)
        if self.known is not None and page.objects:
            await trio.to_thread.run_sync(self.known.load, [info.key for info in page.objects])
        return page

    async def stat(self, path: str) -> Attrs | None:
        """Attributes of ``path``, or None if nothing exists there.

        On a cache miss the name is looked up as described in `_look_up`. With
        ``exact_metadata``, a file known only from a listing costs a HeadObject for the
        mtime and mode stored with it.
        """
        if path == "":
            return DIRECTORY
        cached = self.cache.get(path)
        self.lookups["miss" if cached is None else "hit" if cached else "negative"] += 1
        if cached is not None:
            return await self._exact(path, cached) if cached else None
        if self._stat_ahead is not None:
            ahead = self._stat_ahead.answer(path)
            if ahead is not None and self.unchanged_since(path, ahead[0]):
                return self._keep(path, ahead[1])
            if listed := self._stat_ahead.take(path):
                return await self._exact(path, listed)  # its listing expired in the queue
        parent, _, name = path.rpartition("/")
        listing = self.cache.get_listing(parent)
        # A directory seen to span pages is looked up with one key (`_look_up`), not by
        # listing its parent flat, which would list it whole again.
        if listing is None and path not in self._large and self._worth_listing(parent):
            listing = await self._list_once(parent)
        if listing is not None and path not in self._kept_dirs:
            attrs = listing.get(name)
            if attrs is None:
                self.cache.put_missing(path)
                return None
            return await self._exact(path, attrs)
        since = self._changes.generation
        attrs = await self._look_up(path, parent)
        ours = self._ours_if_newer(path, since)
        if ours is not None:
            return ours or None
        return self._keep(path, attrs)

    @property
    def generation(self) -> int:
        """The number of this mount's latest change (see `cwfs.changes`)."""
        return self._changes.generation

    def unchanged_since(self, path: str, since: int) -> bool:
        """Whether this mount has not changed ``path`` since generation ``since``."""
        changed = self._changes.since(since)
        return changed is not None and not touched(path, changed)

    def handed_out(self, path: str, attrs: Attrs, since: int) -> None:
        """readdir gave ``path`` to the kernel with ``attrs``, from a listing requested
        after generation ``since``: its TTL starts now. ``ls -l`` stats each name right
        after reading it, and a listing of many pages outlasts the TTL of its first ones:
        counted from their arrival, those stats would each cost requests."""
        if not self.unchanged_since(path, since):
            return  # we changed it since: what the cache has is newer
        parent, _, name = path.rpartition("/")
        if name in self._renewed_listing(parent):
            return  # the listing answers for it
        cached = self.cache.get(path)
        if cached is None:
            self.cache.put(path, attrs)
        elif cached and cached.etag == attrs.etag and cached.is_dir == attrs.is_dir:
            self.cache.put(path, cached)  # the same version: renewed
        self._renew_dir(parent)  # its entry is not to be pushed out of the cache by them

    def _renewed_listing(self, directory: str) -> Container[str]:
        """The listing of ``directory`` that answers for the names readdir hands out (or
        nothing), renewed with the directory's own entry, which the kernel looks up
        again meanwhile. Names go out in bursts of one directory: renewing both at
        most `RENEWALS_PER_TTL` times a TTL, not for every name, saves a fifth of the
        mount's CPU time in ``find``."""
        now = self.cache.timer()
        last = self._renewal
        if last[0] == directory and now - last[1] < self.cache.ttl / RENEWALS_PER_TTL:
            return last[2]
        listing = self.cache.renew_listing(directory)
        self._renew_dir(directory)
        self._renewal = (directory, now, () if listing is None else listing)
        return self._renewal[2]

    def _renew_dir(self, path: str, ancestors: bool = False) -> None:
        """``path`` is a directory with entries, as a listing just showed: its own entry
        is renewed, keeping what its marker says if that is cached, and with
        ``ancestors`` those of the directories above it (``find`` deep in a tree would
        otherwise look each up again every TTL)."""
        while path:
            current = self.cache.get(path)
            self.cache.put(path, current if current and current.is_dir else DIRECTORY)
            if not ancestors:
                return
            path = path.rpartition("/")[0]

    def _keep(self, path: str, attrs: Attrs | None) -> Attrs | None:
        """Cache ``attrs`` (None: missing) for ``path`` and return them."""
        if attrs is None:
            self.cache.put_missing(path)
        else:
            self.cache.put(path, attrs)
        return attrs

    def _ours_if_newer(self, path: str, since: int) -> Attrs | Literal[False] | None:
        """What we know of ``path`` if we changed it after ``since`` (an answer requested
        before then is older than our change), else None."""
        changed = self._changes.since(since)
        if changed is not None and not touched(path, changed):
            return None
        return self.cache.get(path)

    async def _look_up(self, path: str, parent: str) -> Attrs | None:
        """Ask the store what ``path`` is, in as few requests as the likely answer allows.

        Usually the first page of the flat listing below ``path/`` goes first: if it
        holds anything, ``path`` is a directory, the page is kept as the start of its
        listing (``ls -l`` of N entries then costs N/1000 ListObjectsV2 in all), and a
        subtree of up to 1,000 keys is known whole, so the lookups and listings below
        it cost nothing. Only an empty page costs a HeadObject. A directory seen lately
        to be larger than a page needs no first page to be looked up again (the kernel
        does so every TTL): one key shows it still is one. In a directory larger than a
        page, a name is most likely one file among many: there HeadObject and a one-key
        listing run concurrently, for one round trip.
        """
        key = self.object_key(path)
        log.debug("looking up %r in the store", key)
        if path in self._large:
            is_dir = bool((await self.store.list_page(key + "/", max_keys=1, delimiter="")).objects)
            info = None if is_dir else await self._head_file(key)
        elif parent in self._large and path not in self._dirs_lately:
            info, page = await gather(
                [
                    lambda: self.store.head_object(key),
                    lambda: self.store.list_page(key + "/", max_keys=1, delimiter=""),
                ]
            )
            is_dir = bool(page.objects)
            if info is None and not is_dir:
                info = await self.store.head_object(key + LINK_SUFFIX)
        else:
            tree = await self._first_page(path)
            is_dir = tree.last_key is not None
            info = None if is_dir else await self._head_file(key)
            if is_dir and info is None:
                return tree.markers.get("", DIRECTORY)
        if is_dir or (info is None and path in self._kept_dirs):
            if info is not None:
                self._report_hidden(key)
            return DIRECTORY
        return None if info is None else self._file_attrs(info)

    async def _first_page(self, path: str) -> SubtreeListing:
        """The first page of the flat listing below ``path/``. If it holds anything, what
        it shows whole is cached, and the rest of a larger subtree starts from it."""
        tree = self._subtree(self.dir_prefix(path))
        tree.add_page(await self._page(self.dir_prefix(path), delimiter=""))
        if tree.last_key is not None:
            self._remember_subtree(path, tree)
            if not tree.complete:
                self._started[path] = tree
        return tree

    def _list_ahead(self, path: str) -> None:
        """Start listing directory ``path`` ahead of a walk (`cwfs.walkahead`), unless
        its listing is cached, started or in flight."""
        if (
            self._background is None
            or path in self._ahead
            or path in self._listing
            or path in self._started
            or self.cache.get_listing(path) is not None
        ):
            return
        self._ahead[path] = trio.Event()
        self._background.start_soon(self._first_page_ahead, path)

    async def _first_page_ahead(self, path: str) -> None:
        try:
            await self._first_page(path)
        except FsError as exc:  # left for the walk's own listing to meet and report
            log.debug("listing %r ahead of a walk failed: %s", path, exc)
        finally:
            self._ahead.pop(path).set()

    def _subdirectories(self, directory: str) -> list[str] | None:
        listing = self.cache.get_listing(directory)
        return None if listing is None else listing.subdirectories()

    async def _head_file(self, key: str) -> ObjectInfo | None:
        """HeadObject of a file, or else of a link of that name (a second request only
        when there is no file)."""
        info = await self.store.head_object(key)
        return info if info is not None else await self.store.head_object(key + LINK_SUFFIX)

    def key_of(self, path: str, attrs: Attrs) -> str:
        """The key of the object that ``path`` with ``attrs`` is: a link's has a suffix, a
        directory's is its marker."""
        if attrs.is_dir:
            return self.dir_prefix(path)
        return self.object_key(path) + (attrs.link or "")

    async def _exact(self, path: str, attrs: Attrs) -> Attrs | None:
        """``attrs``, or with ``exact_metadata`` what HeadObject says of a file seen only in a listing."""
        if attrs.exact or not self.exact_metadata:
            return attrs
        if self._stat_ahead is not None:
            self._stat_ahead.take(path)  # sent now, not from the queue
        pending = self._heads.get(path)
        if pending is not None:  # stat-ahead asked already: its answer, not a second request
            await pending.wait()
            cached = self.cache.get(path)
            return (cached or None) if cached is not None else attrs
        self._heads[path] = done = trio.Event()
        try:
            return await self._head_listed(path, attrs)
        finally:
            del self._heads[path]
            done.set()

    async def _head_ahead(self, path: str, attrs: Attrs) -> Answer | None:
        """Stat-ahead of one listed file, unless its exact attributes are cached already."""
        cached = self.cache.get(path)
        if cached is None or (cached and not cached.exact):
            since = self._changes.generation
            return since, await self._exact(path, attrs)
        return None

    async def _head_listed(self, path: str, attrs: Attrs) -> Attrs | None:
        since = self._changes.generation
        info = await self.store.head_object(self.key_of(path, attrs))
        ours = self._ours_if_newer(path, since)
        if ours is not None:
            return ours or None
        if info is None:  # gone since it was listed
            self.cache.put_missing(path)
            return None
        exact = self._file_attrs(info)
        self.cache.put(path, exact)
        return exact

    def _worth_listing(self, directory: str) -> bool:
        """Whether one listing of ``directory`` should answer lookups in it.

        Yes when it is being worked in: it was listed lately with at most
        `FLAT_LISTING_KEYS` entries (its listing expired under ``ls -l`` or a tool
        creating files), or lookups keep missing the cache in it (``cp -r``, ``tar x``
        into an existing directory). One listing, a request per 1,000 entries, then
        answers them all, where each would cost a HeadObject and a ListObjectsV2.
        Directories found too large for that are left alone.
        """
        if not self.cache.keeps_listings or directory in self._too_large:
            return False
        listed = self.cache.recently_listed(directory)
        if listed is not None:
            return listed <= FLAT_LISTING_KEYS
        misses = self._misses.get(directory, 0) + 1
        self._misses[directory] = misses
        return misses > MISSES_BEFORE_LISTING

    async def _list_once(self, directory: str) -> Listing | None:
        """List ``directory`` within one flat pass, once however many lookups wait for it."""
        pending = self._listing.get(directory)
        if pending is not None:
            await pending.wait()
            return self.cache.get_listing(directory)
        self._listing[directory] = done = trio.Event()
        try:
            log.debug("listing %r for a lookup", directory)
            prefix = self.dir_prefix(directory)
            if directory in self._large and self.cache.recently_listed(directory) is not None:
                await self._list_delimited_whole(directory, prefix)
            elif not (await self._flat_pass(directory, prefix)).complete:
                self._too_large[directory] = True
        finally:
            del self._listing[directory]
            done.set()
        return self.cache.get_listing(directory)

    async def _list_delimited_whole(self, path: str, prefix: str) -> None:
        """List ``path`` alone, with a delimiter: its subtree is known to be larger than
        its own entries (a thousand directories of a thousand files are one page here,
        a thousand pages flat)."""
        since = self._changes.generation
        names = DelimitedNames(set(), self._report_hidden)
        entries: dict[str, Attrs] = {}
        async for batch in self._list_delimited(path, prefix, None, names, since):
            entries.update(batch)
        self._remember_listing(path, entries, since)
        self._note_dirs(path, entries.items())
        self._large[path] = True  # still what we know of its subtree: `find` lasts minutes

    async def list_dir(self, path: str) -> AsyncIterator[list[tuple[str, Attrs]]]:
        """Yield the entries of directory ``path``, a batch at a time.

        A listing cached within the TTL costs nothing. Otherwise the subtree is first
        listed flat, up to `FLAT_LISTING_PAGES` pages, which also completes the
        listings of the directories below (a recursive walk then costs about one
        request per 1,000 objects). A subtree too large for that continues with a
        delimited listing of this directory alone, after the last key seen, kept in
        the cache as it arrives so that it answers for the names it has given out; a
        directory larger than the cache is not kept, only streamed. Keys that cannot
        be file names are skipped with one log line each.
        """
        self._walk.listed(path, self._subdirectories)
        cached = self.cache.get_listing(path)
        if cached is None and (ahead := self._ahead.get(path)) is not None:
            await ahead.wait()  # its first page, requested ahead of this walk
            cached = self.cache.get_listing(path)
        self.dir_reads["miss" if cached is None else "hit"] += 1
        if cached is not None:
            for batch in cached.batches(PAGE_KEYS):
                self._look_ahead(path, batch)
                yield batch
            return
        prefix = self.dir_prefix(path)
        tree = await self._flat_pass(path, prefix)
        if tree.last_key is not None:
            self._renew_dir(path, ancestors=True)  # the pass can outlast their lookups' TTL
        listed = dict(tree.dirs[""])
        patched = self._with_ours(path, dict(listed), tree.since)
        entries = listed if patched is None else patched
        self._look_ahead(path, entries.items())
        yield list(entries.items())
        if not tree.complete:
            async for batch in self._list_rest(path, prefix, tree, entries):
                yield batch

    async def _list_rest(
        self, path: str, prefix: str, tree: SubtreeListing, first: Entries
    ) -> AsyncIterator[list[tuple[str, Attrs]]]:
        """The entries after the flat pass, while the listing fills the cache."""
        started = Listing(first.items(), complete=False)
        listing = started if self.cache.put_listing(path, started) else None
        names = DelimitedNames(set(first), self._report_hidden)
        async for batch in self._list_delimited(path, prefix, tree.last_key, names, tree.since):
            if listing is not None and not self.unchanged_since(path, tree.since):
                self.cache.drop_listing(path)  # our changes can no longer be put in it
                listing = None
            if listing is not None:
                listing.update(batch)
                if not self.cache.keep_listing(path, listing):
                    listing = None  # larger than the cache: streamed, not kept
            self._look_ahead(path, batch)
            yield batch
        if listing is not None:
            self.cache.drop_listing(path)
            self._remember_listing(path, listing, tree.since)

    def _note_dirs(self, directory: str, entries: Iterable[tuple[str, Attrs]]) -> None:
        for name, attrs in entries:
            if attrs.is_dir:
                self._dirs_lately[join(directory, name)] = True

    def _look_ahead(self, directory: str, entries: Iterable[tuple[str, Attrs]]) -> None:
        """Note the directories among ``entries``, given out by readdir; with
        ``exact_metadata``, send the HeadObjects the ``stat``s after it need, now."""
        self._note_dirs(directory, entries)
        if self._stat_ahead is not None:
            listed = ((join(directory, name), attrs) for name, attrs in entries)
            self._stat_ahead.start(item for item in listed if not item[1].is_dir)

    async def _flat_pass(self, path: str, prefix: str) -> SubtreeListing:
        """List the subtree below ``path`` flat, up to `FLAT_LISTING_PAGES` pages.

        It continues from the page its lookup fetched, if that is still fresh. Every
        directory seen whole is remembered, ``path`` itself too if the subtree fitted
        (``complete``).
        """
        tree = self._started.pop(path, None) or self._subtree(prefix)
        while not tree.complete and tree.pages < FLAT_LISTING_PAGES:
            tree.add_page(await self._page(prefix, tree.next_token, delimiter=""))
        self._remember_subtree(path, tree)
        return tree

    def _subtree(self, prefix: str) -> SubtreeListing:
        tree = SubtreeListing(prefix, self._usable, self._file_attrs)
        tree.since = self._changes.generation
        return tree

    def _remember_subtree(self, path: str, tree: SubtreeListing) -> None:
        """Cache the listing of every directory ``tree`` saw whole; note a large ``path``."""
        for key in tree.hidden:
            self._report_hidden(key)
        complete = tree.dirs if tree.complete else {d: tree.dirs[d] for d in tree.complete_dirs()}
        for directory, entries in complete.items():
            below = join(path, directory) if directory else path
            self._remember_listing(below, entries, tree.since)
            if len(entries) > PAGE_KEYS:
                self._large[below] = True
        if not tree.complete:
            self._large[path] = True

    async def _list_delimited(
        self, path: str, prefix: str, start_after: str | None, names: DelimitedNames, since: int
    ) -> AsyncIterator[list[tuple[str, Attrs]]]:
        """The rest of ``path``'s entries, one ListObjectsV2 page (delimiter ``/``) at a time."""
        token: str | None = None
        while True:
            page = await self._page(prefix, token, start_after=None if token else start_after)
            entries: list[tuple[str, Attrs]] = []
            for key, info in sorted(self._page_keys(page), key=lambda item: item[0]):
                rest = key[len(prefix) :]
                name = rest[:-1] if info is None else link_name(rest) or rest
                if rest and self._usable(key, name):
                    attrs = DIRECTORY if info is None else self._file_attrs(info)
                    entries += names.add(rest, key, name, attrs)
            token = page.next_token
            if token is None:
                entries += names.rest()
            batch = self._with_ours(path, dict(entries), since, whole=False)
            yield entries if batch is None else list(batch.items())
            if token is None:
                return

    @staticmethod
    def _page_keys(page: ListPage) -> Iterator[tuple[str, ObjectInfo | None]]:
        """A delimited page's prefixes (without an object) and objects, for one pass in
        key order."""
        yield from ((common, None) for common in page.prefixes)
        yield from ((info.key, info) for info in page.objects)

    def _report_hidden(self, key: str) -> None:
        self._report_once(
            key, "object %r is hidden by the directory %r of the same name", key, key + "/"
        )

    def _with_ours(
        self, path: str, entries: Entries, since: int, whole: bool = True
    ) -> Entries | None:
        """A listing of ``path`` requested at generation ``since``, with our own later
        changes in it (they are newer); None when that cannot be told for sure. A part
        of a listing (not ``whole``) gets only the names it holds replaced or removed."""
        changed = self._changes.since(since)
        if changed is None or touched(path, changed):
            return None
        for child in changed:
            parent, _, name = child.rpartition("/")
            if parent != path or not (whole or name in entries):
                continue
            ours = self.cache.get(child)
            if ours is None:
                return None  # our change is no longer cached: nothing to put in its place
            if ours:
                entries[name] = ours
            else:
                entries.pop(name, None)
        return entries

    def _remember_listing(self, path: str, entries: Entries, since: int) -> None:
        """Cache a complete listing, which answers for its names; one with entries also
        shows that ``path`` is a directory now, so a lookup of it within the TTL needs no
        request (``ls -l`` of a large directory outlives the lookup it started with).
        Names we changed after the listing was requested keep what we know of them."""
        listing = entries if isinstance(entries, Listing) else Listing(entries.items())
        if self._with_ours(path, listing, since) is None:
            return
        listing.complete = True
        if listing:
            self._renew_dir(path)
        self.cache.put_listing(path, listing)

    async def make_dir(self, path: str, attrs: Attrs, metadata: dict[str, str]) -> Attrs:
        """Create the marker object ``path/`` with ``metadata``; PreconditionFailed if it
        already exists.

        A PutObject sent again because its answer was lost meets its own first attempt:
        a marker that holds our metadata, mtime to the nanosecond, is ours."""
        key = self.dir_prefix(path)
        try:
            response = await self.store.put_object(key, b"", WriteCondition(None), metadata, None)
            etag = response["ETag"]
        except PreconditionFailed:
            head = await self.store.head_object(key)
            if head is None or head.metadata != metadata:
                raise
            etag = head.etag
        attrs = dataclasses.replace(attrs, etag=etag)
        self.stored(path, attrs)
        self.cache.put_listing(path, Listing())  # a directory just created holds nothing yet
        return attrs

    async def set_dir_metadata(self, path: str, attrs: Attrs, metadata: dict[str, str]) -> Attrs:
        """Store a directory's mode, owner and mtime on its marker object: created for an
        implicit directory, else replaced with a self-copy."""
        key = self.dir_prefix(path)
        source = attrs.etag
        if source is None:
            try:
                response = await self.store.put_object(
                    key, b"", WriteCondition(None), metadata, None
                )
                return self._dir_stored(path, attrs, response["ETag"])
            except PreconditionFailed:  # a marker we had not seen: its metadata is replaced
                head = await self.store.head_object(key)
                source = None if head is None else head.etag
        result = await self.store.copy_object(key, key, source, metadata, None)
        return self._dir_stored(path, attrs, result["ETag"])

    def _dir_stored(self, path: str, attrs: Attrs, etag: str) -> Attrs:
        attrs = dataclasses.replace(attrs, etag=etag, exact=True)
        self.stored(path, attrs)
        return attrs

    async def remove_dir(self, path: str) -> None:
        """Remove an empty directory (its marker, if any); ENOTEMPTY if anything is below."""
        prefix = self.dir_prefix(path)
        if not await self.is_empty_dir(path):
            raise NotEmpty("objects exist below it", key=prefix)
        await self.store.delete_object(prefix)
        self._kept_dirs.discard(path)
        self.cache.drop_listing(path)
        self.removed(path)

    async def remove_file(self, path: str, attrs: Attrs) -> None:
        await self.store.delete_object(self.key_of(path, attrs))
        self.removed(path)

    def stored(self, path: str, attrs: Attrs) -> None:
        """This mount just wrote ``path``: show it at once, in its directory's listing too."""
        if self.known is not None and attrs.etag is not None:
            self.known.remember(self.key_of(path, attrs), known_of(attrs, attrs.etag))
        self._changes.record(path)
        self.cache.put(path, attrs)
        self._update_listing(path, attrs)

    def removed(self, path: str) -> None:
        """``path`` is gone; its directory stays visible even if that made it empty."""
        self._changes.record(path)
        self.cache.put_missing(path)
        parent = self._update_listing(path, None)
        if parent:
            self._kept_dirs.add(parent)

    def forget_tree(self, path: str) -> None:
        """Everything at and below ``path`` may have changed: ask the store next time."""
        self._changes.record(path)
        self.cache.forget_below(path)
        self.cache.forget(path)
        self._drop_started(path)
        self.cache.drop_listing(path)
        self.cache.drop_listing(path.rpartition("/")[0])

    def _update_listing(self, path: str, attrs: Attrs | None) -> str:
        """Apply our own change to the cached listing of ``path``'s directory, if any.

        The listing keeps its expiry: another client's changes still show after the TTL.
        """
        parent, _, name = path.rpartition("/")
        self.cache.update_listing(parent, name, attrs)
        self._drop_started(path)
        return parent

    def _drop_started(self, path: str) -> None:
        """Forget first pages that may not show our change at ``path``: list afresh."""
        for directory in list(self._started):
            if (
                directory in ("", path)
                or path.startswith(directory + "/")
                or directory.startswith(path + "/")
            ):
                del self._started[directory]

    def renamed(self, old: str, new: str, attrs: Attrs) -> None:
        """``old`` now lives at ``new``: show it there at once and nowhere else."""
        if attrs.is_dir:
            self.forget_tree(old)
            self.forget_tree(new)
            below = old + "/"
            self._kept_dirs = {
                new + p[len(old) :] if p == old or p.startswith(below) else p
                for p in self._kept_dirs
            }
        self.removed(old)
        self.stored(new, attrs)

    async def is_empty_dir(self, path: str) -> bool:
        prefix = self.dir_prefix(path)
        page = await self.store.list_page(prefix, max_keys=2, delimiter="")
        return all(info.key == prefix for info in page.objects)

    def release_dir(self, path: str) -> None:
        """The kernel no longer holds ``path``: an emptied directory may now vanish."""
        self._kept_dirs.discard(path)

    def _usable(self, key: str, name: str) -> bool:
        reason = invalid_name_reason(name)
        if reason is not None:
            self._report_once(key, "skipping key %r: it cannot be a file name (%s)", key, reason)
        return reason is None
