"""The filesystem's behaviour, free of FUSE: paths and attributes in, results or typed errors out.

It owns the rules of open, read, write, flush, release, setattr, unlink, rename and
the directory operations, and the state they share: the table of files open for
writing (one `OpenFile` per path, shared by its handles) and the directory renames
that failed midway. Failures are raised as `cwfs.errors` types; the FUSE binding
(`cwfs.fuse`) turns them into errno. Its concurrency model is in docs/internals.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import trio
from cachetools import LRUCache

from cwfs.attrs import (
    DIRECTORY,
    LINK_SUFFIX,
    RDEV_KEY,
    SPECIAL_TYPES,
    Attrs,
    object_metadata,
)
from cwfs.errors import (
    BadHandle,
    Busy,
    Exists,
    FsError,
    InvalidArgument,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    ObjectMissing,
    PreconditionFailed,
    ReadOnly,
    Stale,
    StoreError,
    TooLarge,
)
from cwfs.listing import join
from cwfs.namespace import NAME_MAX, Namespace
from cwfs.openfile import OpenFile
from cwfs.prefetch import Prefetcher
from cwfs.rename import Renamer
from cwfs.staging import StagingArea
from cwfs.store import WriteCondition
from cwfs.upload import Uploader

log = logging.getLogger(__name__)

S3_MAX_OBJECT_SIZE = 5 << 40  # 5 TiB
MAX_KEY_BYTES = 1024  # S3's longest key, in UTF-8
LINK_TARGETS = 10_000  # link targets remembered, by key and ETag
DIRECTORY_TIMES = 100_000  # directories whose entries this mount changed, remembered
MULTIPART_MAX_OBJECT_SIZE = 10_000 * (5 << 30)  # 10,000 parts of at most 5 GiB: 48.8 TiB
WINDOW = 1024  # entries of an open directory kept behind where the kernel reads


def max_file_size(coreweave: bool) -> int:
    """The largest object a file can become: CoreWeave's multipart limit, or S3's 5 TiB.

    The part size grows with the file (`cwfs.upload.part_size_for`), so the configured
    one does not lower the limit.
    """
    return MULTIPART_MAX_OBJECT_SIZE if coreweave else S3_MAX_OBJECT_SIZE


@dataclass(frozen=True)
class AttrChanges:
    """What a setattr changes: None leaves an attribute as it is."""

    size: int | None = None
    mtime_ns: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None

    @property
    def sets_metadata(self) -> bool:
        """Whether it sets anything stored as object metadata: times, mode or owner."""
        return (self.mtime_ns, self.mode, self.uid, self.gid) != (None, None, None, None)

    def apply_metadata(self, open_file: OpenFile) -> None:
        """The times, mode and owner this change sets, onto ``open_file``."""
        if self.sets_metadata:
            open_file.set_metadata(self.mtime_ns, self.mode, self.uid, self.gid)


@dataclass(eq=False)
class FileHandle:
    """One open descriptor's state: its reader, and its `OpenFile` when opened for writing."""

    path: str
    reader: Prefetcher
    attrs: Attrs  # as opened
    open_file: OpenFile | None = None
    generation: int = 0  # the namespace's change number when it was opened
    # Flushed since its last write: its close() has (probably) begun, and its RELEASE,
    # which the kernel sends after close() returns, may still be on its way.
    flushed: bool = False


@dataclass
class DirListing:
    """An open directory: a window of its entries, and the listing that yields more.

    Files created on this mount and not yet uploaded are appended once the listing
    is complete, so ``ls`` shows a file while it is being written; names hidden by an
    interrupted directory rename are left out. With ``refine`` (``--exact-metadata``),
    a file known only from the listing is given as ``stat`` would give it. Each entry
    goes to the kernel through ``adjust``, which gives a file open for writing what it
    holds now and a file being read the version read: the kernel takes a listing's
    attributes (readdirplus), and an older size from the listing made it cut a file
    being appended to, so that the next append overwrote what came before.

    The kernel reads on from where it stopped, so only the entries from there on are
    kept (``base`` is the index of the first): a directory of a million names costs
    no more memory here than one of a thousand. Reading again from an earlier place
    (``rewinddir``) lists the directory again from its start.
    """

    path: str
    open_pages: Callable[[], AsyncIterator[list[tuple[str, Attrs]]]]
    local: Callable[[], dict[str, Attrs]]
    hidden: Callable[[str], bool]
    adjust: Callable[[str, Attrs], Attrs]
    handed_out: Callable[[str, Attrs], None]
    refine: Callable[[str, Attrs], Awaitable[Attrs]] | None = None
    entries: list[tuple[str, Attrs]] = field(default_factory=list)
    base: int = 0
    complete: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)
    _pages: AsyncIterator[list[tuple[str, Attrs]]] | None = field(default=None, init=False)
    _listed_local: set[str] = field(default_factory=set, init=False)  # local files it listed

    async def entry(self, index: int) -> tuple[str, Attrs] | None:
        """Entry ``index`` of the listing, fetching pages until it exists or the end."""
        if index < self.base:
            await self._restart()
        if index - self.base >= WINDOW:
            del self.entries[: index - self.base]
            self.base = index
        while index >= self.base + len(self.entries) and not self.complete:
            await self._fetch()
        position = index - self.base
        if position >= len(self.entries):
            return None
        name, attrs = self.entries[position]
        path = join(self.path, name)
        if self.refine is not None and not attrs.exact and not attrs.is_dir:
            attrs = await self.refine(path, attrs)
            self.entries[position] = (name, attrs)
        self.handed_out(path, attrs)
        return name, self.adjust(path, attrs)  # as it is when the kernel gets it

    async def _fetch(self) -> None:
        if self._pages is None:
            self._pages = self.open_pages()
        try:
            batch = await self._pages.__anext__()
        except StopAsyncIteration:
            self.complete = True
            batch = [item for item in self.local().items() if item[0] not in self._listed_local]
        else:
            local = self.local()
            self._listed_local.update(name for name, _ in batch if name in local)
        self.entries += [(n, a) for n, a in batch if not self.hidden(join(self.path, n))]

    async def _restart(self) -> None:
        await self.close()
        self._pages = None
        self.entries, self.base, self.complete = [], 0, False
        self._listed_local.clear()

    async def close(self) -> None:
        if self._pages is not None:
            await self._pages.aclose()  # type: ignore[attr-defined]


class Filesystem:
    """One mounted bucket's behaviour."""

    def __init__(
        self,
        namespace: Namespace,
        staging: StagingArea,
        uploader: Uploader,
        renamer: Renamer,
        readers: Callable[[str, int, str | None], Prefetcher],
        read_only: bool = False,
        max_size: int = S3_MAX_OBJECT_SIZE,
    ) -> None:
        self._ns = namespace
        self._store = namespace.store
        self._staging = staging
        self._uploader = uploader
        self._renamer = renamer
        self._readers = readers
        self._read_only = read_only
        self._max_size = max_size
        # Directory renames that failed midway, destination -> source: the destination
        # is hidden on this mount until the same rename is repeated and completes it.
        self._interrupted: dict[str, str] = {}
        self._open: dict[str, OpenFile] = {}
        # Names unlinked while descriptors on this mount still had them open: hidden at
        # once, their object (this ETag) deleted when the last of those descriptors closes.
        self._doomed: dict[str, Attrs] = {}
        self._handles: set[FileHandle] = set()  # given out and not yet released
        self._reading: dict[str, FileHandle] = {}  # the newest read-only handle of a path
        self._targets: LRUCache[tuple[str, str | None], str] = LRUCache(LINK_TARGETS)
        # When this mount last added or removed an entry of a directory: its mtime (S3
        # keeps none for a prefix), in memory.
        self._dir_mtimes: LRUCache[str, int] = LRUCache(DIRECTORY_TIMES)
        self._ctimes: LRUCache[str, int] = LRUCache(DIRECTORY_TIMES)  # status changes, in memory

    # -- names and attributes ----------------------------------------------------------

    async def find(self, path: str, current: bool = False) -> Attrs | None:
        """Attributes of ``path`` or None: a file open for writing wins over the store, and
        one being read shows the version read (`_as_read`) unless ``current`` is asked."""
        open_file = self._open.get(path)
        if open_file is not None and not open_file.unlinked:
            return open_file.attrs()
        if path in self._interrupted or path in self._doomed:
            return None
        attrs = await self._ns.stat(path)
        if not current:
            attrs = self._as_read(path, attrs)
        return None if attrs is None else self._with_times(path, attrs)

    def _as_read(self, path: str, attrs: Attrs | None) -> Attrs | None:
        """While this mount reads a version of ``path`` that another client has since
        replaced or deleted, the name shows that version. The kernel then keeps its size
        and sends the reads past what it cached here, where they get the rest of that
        version or fail with ESTALE, instead of ending early at the new size (or, for a
        deleted file, making the open descriptor unusable). A new open sees the current
        version (`open` asks for it) and becomes the one shown; so does any change this
        mount makes to the name (a write, chmod, a rename onto it)."""
        reading = self._reading.get(path)
        if (
            reading is None
            or (attrs is not None and attrs.etag == reading.attrs.etag)
            or not self._ns.unchanged_since(path, reading.generation)  # our change wins
        ):
            return attrs
        return reading.attrs

    def _with_times(self, path: str, attrs: Attrs) -> Attrs:
        """The times this mount knows better than the store: a directory whose entries it
        changed shows when it did, and a name it changed (chmod, chown, touch, rename)
        shows that as its ctime. Both are kept in memory: S3 has neither."""
        if attrs.is_dir and path in self._dir_mtimes:
            attrs = dataclasses.replace(attrs, mtime_ns=self._dir_mtimes[path])
        ctime = self._ctimes.get(path)
        if ctime is not None and ctime > attrs.mtime_ns:
            attrs = dataclasses.replace(attrs, ctime_ns=ctime)
        return attrs

    def _entries_changed(self, *paths: str) -> None:
        """Entries ``paths`` were added or removed: their directories' mtime is now."""
        now = time.time_ns()
        for path in paths:
            self._dir_mtimes[path.rpartition("/")[0]] = now

    def shown_path(self, handle: FileHandle) -> str:
        """Where the open file is in the mount."""
        return handle.path

    def handle_attrs(self, handle: FileHandle) -> Attrs:
        """What ``fstat`` shows of an open file, also once its name is gone."""
        if handle.open_file is not None:
            return handle.open_file.attrs()
        return handle.attrs

    async def stat(self, path: str, current: bool = False) -> Attrs:
        attrs = await self.find(path, current)
        if attrs is None:
            raise NotFound("no such file or directory", key=self._ns.object_key(path))
        return attrs

    async def setattr(
        self, path: str | None, changes: AttrChanges, handle: FileHandle | None
    ) -> Attrs:
        """Truncate, and keep mtime, mode and owner as object metadata.

        A change through a descriptor open for writing (``ftruncate``), or by path while
        one is in use, goes out with that file's close or fsync, as its writes do. Any
        other change by path is in the store when this returns: a file just closed may
        still count as open here, because the kernel sends its RELEASE after ``close()``
        returned, so the change holds a handle of its own while it is committed. A file
        unlinked while open (``path`` None) is changed in its staged copy only. The
        change time (ctime) is now, in memory.
        """
        attrs = await self._setattr(path, changes, handle)
        if path is not None and changes != AttrChanges():
            self._ctimes[path] = time.time_ns()
            attrs = self._with_times(path, attrs)
        return attrs

    async def _setattr(
        self, path: str | None, changes: AttrChanges, handle: FileHandle | None
    ) -> Attrs:
        unlinked = handle is not None and handle.open_file is not None and handle.open_file.unlinked
        if path is None or unlinked:
            return await self._setattr_unlinked(handle, changes)
        attrs = await self.stat(path)
        if attrs.is_dir:
            return await self._set_dir_attrs(path, attrs, changes)
        if attrs.is_link or changes == AttrChanges():
            return attrs  # atime, link times and owners: accepted, not stored
        self._check_writable(path)
        if changes.size is not None:
            self._check_size(path, changes.size)
        open_file = self._open_for_write(path, attrs, None)
        try:
            if changes.size is not None:
                await open_file.truncate(self._store, changes.size)
            changes.apply_metadata(open_file)
            if handle is None and not self._in_use(open_file):
                await self._commit(open_file)
            return open_file.attrs()
        finally:
            await self._close_for_write(open_file)

    async def _setattr_unlinked(self, handle: FileHandle | None, changes: AttrChanges) -> Attrs:
        open_file = handle.open_file if handle is not None else None
        if open_file is None:
            raise NotFound("no such file (unlinked)")
        if changes.size is not None:
            self._check_size(open_file.path, changes.size)
            await open_file.truncate(self._store, changes.size)
        changes.apply_metadata(open_file)
        return open_file.attrs()

    def _in_use(self, open_file: OpenFile) -> bool:
        """Whether a descriptor is writing ``open_file``: opened or written since its last flush."""
        return any(h.open_file is open_file and not h.flushed for h in self._handles)

    def _check_size(self, path: str, size: int) -> None:
        if size > self._max_size:
            raise TooLarge(
                f"{size} bytes is more than an object can hold ({self._max_size})",
                key=self._ns.object_key(path),
            )

    # -- directories -------------------------------------------------------------------

    def list_dir(self, path: str) -> DirListing:
        since = self._ns.generation
        return DirListing(
            path,
            lambda: self._ns.list_dir(path),
            lambda: self._local_entries(path),
            lambda name: name in self._interrupted or name in self._doomed,
            self._as_listed,
            lambda child, attrs: self._ns.handed_out(child, attrs, since),
            self._as_stat if self._ns.exact_metadata else None,
        )

    def _as_listed(self, path: str, listed: Attrs) -> Attrs:
        """A listed entry as `find` would give it, without a request: a file open for
        writing shows what it holds, one being read the version read."""
        open_file = self._open.get(path)
        if open_file is not None and not open_file.unlinked:
            attrs = open_file.attrs()
        else:
            attrs = self._as_read(path, listed) or listed
        return self._with_times(path, attrs)

    async def _as_stat(self, path: str, listed: Attrs) -> Attrs:
        """A listed file's attributes as ``stat`` gives them. Stat-ahead sent its
        HeadObject when the page arrived, so this mostly waits for an answer in flight;
        readdirplus then carries exact attributes and ``ls -l`` sends the mount no request
        per file. A failure is left for the ``stat`` to meet and report."""
        try:
            return await self.find(path) or listed
        except FsError:
            return listed

    def _local_entries(self, directory: str) -> dict[str, Attrs]:
        prefix = directory + "/" if directory else ""
        return {
            path[len(prefix) :]: f.attrs()
            for path, f in self._open.items()
            if path.startswith(prefix) and "/" not in path[len(prefix) :] and not f.unlinked
        }

    def forgotten(self, path: str) -> None:
        """The kernel no longer holds ``path``: an emptied directory may now vanish."""
        self._ns.release_dir(path)

    async def make_dir(
        self, path: str, mode: int | None = None, owner: tuple[int, int] | None = None
    ) -> Attrs:
        """A directory marker ``path/``, carrying the mode asked for and its creator."""
        self._check_new_name(path, directory=True)
        uid, gid = owner if owner is not None else (None, None)
        attrs = Attrs(True, 0, time.time_ns(), None, mode, uid=uid, gid=gid)
        metadata = object_metadata(attrs.mtime_ns, mode, stat.S_IFDIR, uid, gid)
        try:
            attrs = await self._ns.make_dir(path, attrs, metadata)
        except PreconditionFailed:
            raise Exists(
                "a directory marker already exists", key=self._ns.dir_prefix(path)
            ) from None
        self._entries_changed(path)
        return attrs

    async def _set_dir_attrs(self, path: str, attrs: Attrs, changes: AttrChanges) -> Attrs:
        """chmod, chown and touch of a directory: stored on its marker object."""
        if not path or not changes.sets_metadata:
            return attrs  # the mount's root has no marker; atime is not kept
        self._check_writable(path)
        changed = dataclasses.replace(
            attrs,
            mode=attrs.mode if changes.mode is None else changes.mode,
            uid=attrs.uid if changes.uid is None else changes.uid,
            gid=attrs.gid if changes.gid is None else changes.gid,
            mtime_ns=changes.mtime_ns or attrs.mtime_ns or time.time_ns(),
        )
        metadata = object_metadata(
            changed.mtime_ns, changed.mode, stat.S_IFDIR, changed.uid, changed.gid
        )
        if changes.mtime_ns is not None:
            self._dir_mtimes.pop(path, None)  # the time set wins over our entries' changes
        return await self._ns.set_dir_metadata(path, changed, metadata)

    async def remove_dir(self, path: str) -> None:
        self._check_writable(path)
        if self._local_entries(path):
            raise NotEmpty("files below it are being written", key=self._ns.dir_prefix(path))
        await self._ns.remove_dir(path)
        self._entries_changed(path)

    async def unlink(self, path: str) -> None:
        """Remove a file. Open on this mount, it stays usable through its descriptors (as
        on a local disk): its name goes at once, its object when the last one closes."""
        self._check_writable(path)
        attrs = await self.stat(path)
        open_file = self._open.pop(path, None)
        if open_file is not None:
            open_file.unlink()  # never uploaded from now on
            attrs = open_file.attrs()
        self._entries_changed(path)
        if self._held(path):
            self._doomed[path] = attrs
            self._ns.removed(path)
        elif attrs.etag is None:
            self._ns.removed(path)  # never uploaded: nothing to delete
        else:
            await self._ns.remove_file(path, attrs)

    async def _delete_when_unused(self, path: str) -> None:
        """The last descriptor of an unlinked name closed: its object goes now."""
        if path not in self._doomed or self._held(path):
            return
        attrs = self._doomed.pop(path)
        if attrs.etag is not None:
            try:
                await self._ns.remove_file(path, attrs)
            except FsError as exc:
                why = f"its object was not deleted (unlinked while open): {exc.message}"
                raise exc.retyped(type(exc), why) from None

    def _show_other_reader(self, path: str) -> None:
        """The handle whose version ``path`` showed is closed: another reader's, or none."""
        others = [h for h in self._handles if h.path == path and h.open_file is None]
        if others:
            self._reading[path] = others[-1]
        else:
            self._reading.pop(path, None)

    def _held(self, path: str) -> bool:
        """Whether a descriptor on this mount has ``path`` open."""
        return any(handle.path == path for handle in self._handles)

    def _reuse_doomed(self, path: str, open_file: OpenFile) -> None:
        """A new file at a name unlinked while open replaces the object still there."""
        if path in self._doomed:
            attrs = self._doomed.pop(path)
            if open_file.etag is None and not attrs.is_link:
                open_file.etag = attrs.etag

    def _check_writable(self, path: str) -> None:
        if self._read_only:
            raise ReadOnly("read-only mount", key=self._ns.object_key(path))

    def _check_new_name(self, path: str, directory: bool = False) -> None:
        """Refuse, before any request, a name no listing could show or S3 could store."""
        self._check_writable(path)
        name = path.rpartition("/")[2]
        key = self._ns.dir_prefix(path) if directory else self._ns.object_key(path)
        if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise NameTooLong(f"a name has at most {NAME_MAX} bytes", key=key)
        if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY_BYTES:
            raise NameTooLong(f"an object key has at most {MAX_KEY_BYTES} bytes", key=key)

    # -- special files -----------------------------------------------------------------

    async def make_node(
        self, path: str, mode: int, rdev: int, owner: tuple[int, int] | None = None
    ) -> Attrs:
        """A FIFO, socket or device node: an empty object with its type in its mode, as s3fs
        stores them; the kernel gives them their meaning. Regular files go through `create`."""
        kind = stat.S_IFMT(mode)
        if kind not in SPECIAL_TYPES:
            key = self._ns.object_key(path)
            raise InvalidArgument(f"mknod of file type {kind:o} is not supported", key=key)
        self._check_new_name(path)
        uid, gid = owner if owner is not None else (None, None)
        attrs = Attrs(False, 0, time.time_ns(), None, stat.S_IMODE(mode), uid=uid, gid=gid)
        attrs = dataclasses.replace(attrs, special=kind, rdev=rdev)
        metadata = object_metadata(attrs.mtime_ns, attrs.mode, kind, uid, gid)
        if rdev:
            metadata[RDEV_KEY] = str(rdev)
        return await self._create_object(path, b"", attrs, metadata)

    async def _create_object(
        self, path: str, body: bytes, attrs: Attrs, metadata: dict[str, str]
    ) -> Attrs:
        """Write the object ``path`` (with ``attrs``) is, complete, only if its key is free."""
        key = self._ns.key_of(path, attrs)
        try:
            response = await self._store.put_object(key, body, WriteCondition(None), metadata, None)
        except PreconditionFailed:
            raise Exists("the name exists", key=key) from None
        attrs = dataclasses.replace(attrs, etag=response["ETag"])
        self._entries_changed(path)
        self._ns.stored(path, attrs)
        return attrs

    # -- symbolic links ----------------------------------------------------------------

    async def symlink(self, path: str, target: str) -> Attrs:
        """A link: the object ``<path>.rclonelink``, its body the target (created only if new)."""
        self._check_new_name(path + LINK_SUFFIX)
        body = target.encode("utf-8", "surrogateescape")
        attrs = Attrs(False, len(body), time.time_ns(), None, 0o777, link=LINK_SUFFIX)
        metadata = object_metadata(attrs.mtime_ns, 0o777, stat.S_IFLNK)
        return await self._create_object(path, body, attrs, metadata)

    async def readlink(self, path: str) -> str:
        """A link's target: one GetObject, then remembered for that version."""
        attrs = await self.stat(path)
        key = self._ns.key_of(path, attrs)
        if not attrs.is_link:
            raise InvalidArgument("not a symbolic link", key=key)
        target = self._targets.get((key, attrs.etag))
        if target is None:
            chunks = (
                await self._store.get_range(key, 0, attrs.size - 1, attrs.etag)
                if attrs.size
                else []
            )
            target = b"".join(chunks).decode("utf-8", "surrogateescape")
            self._targets[(key, attrs.etag)] = target
        return target

    # -- rename ------------------------------------------------------------------------

    async def rename(
        self, old: str, new: str, no_replace: bool = False, exchange: bool = False
    ) -> None:
        """Move ``old`` to ``new``: one RenameObject for a file, every object below for a directory."""
        if exchange:
            log.warning(
                "rename with RENAME_EXCHANGE is not supported: S3 cannot swap two keys atomically"
            )
            raise InvalidArgument("RENAME_EXCHANGE is not supported", key=self._ns.object_key(old))
        self._check_writable(old)
        attrs = await self.stat(old)
        self._check_new_name(new, directory=attrs.is_dir)
        target = await self.find(new)
        if target is not None and no_replace:
            raise Exists("the destination exists", key=self._ns.object_key(new))
        if attrs.is_dir:
            await self._rename_dir(old, new, target)
        else:
            await self._rename_file(old, new, attrs, target, no_replace)
        self._entries_changed(old, new)
        self._ctimes[new] = time.time_ns()

    async def _rename_file(
        self, old: str, new: str, attrs: Attrs, target: Attrs | None, no_replace: bool
    ) -> None:
        new_key = self._ns.key_of(new, attrs)
        if target is not None and target.is_dir:
            raise IsADirectory("the destination is a directory", key=new_key)
        open_file = self._open.get(old)
        if open_file is not None:
            # Its last descriptor may be released meanwhile: not closed under us.
            open_file.handles += 1
        try:
            if open_file is not None:  # its data first, under the old name
                attrs = await self._commit(open_file) or open_file.attrs()
            new_etag = await self._move(old, new, attrs, no_replace)
            if target is not None and target.link != attrs.link:
                # A link over a file, or a file over a link: two keys, the old one goes.
                await self._ns.remove_file(new, target)
            attrs = dataclasses.replace(attrs, etag=new_etag or attrs.etag)
            replaced = self._open.pop(new, None)
            if replaced is not None:
                replaced.unlink()  # its writers now write to a file with no name
            self._doomed.pop(new, None)  # that object was just replaced
            for handle in self._handles:
                if handle.path == old:
                    handle.path = new
                    handle.reader.moved(new_key)
            if (reading := self._reading.pop(old, None)) is not None:
                self._reading[new] = reading
            if open_file is not None and self._open.get(old) is open_file:
                del self._open[old]
                open_file.moved(new, new_key, attrs.etag)
                self._open[new] = open_file
            self._ns.renamed(old, new, attrs)
        finally:
            if open_file is not None:
                await self._close_for_write(open_file)

    async def _move(self, old: str, new: str, attrs: Attrs, no_replace: bool) -> str | None:
        new_key = self._ns.key_of(new, attrs)
        try:
            return await self._renamer.rename(
                self._ns.key_of(old, attrs), new_key, attrs.size, attrs.etag, no_replace
            )
        except PreconditionFailed as exc:
            kind = Exists if no_replace else Stale
            reason = "the destination was created, or the source replaced, meanwhile"
            raise exc.retyped(kind, reason, key=new_key) from None

    async def _rename_dir(self, old: str, new: str, target: Attrs | None) -> None:
        if target is not None and not target.is_dir:
            raise NotADirectory("the destination is a file", key=self._ns.object_key(new))
        if target is not None and not await self._ns.is_empty_dir(new):
            raise NotEmpty("the destination directory is not empty", key=self._ns.dir_prefix(new))
        if any(path.startswith(old + "/") for path in self._open):
            log.warning("cannot rename %r: files below it are open for writing", old)
            raise Busy("files below it are open for writing", key=self._ns.dir_prefix(old))
        try:
            await self._renamer.rename_tree(self._ns.dir_prefix(old), self._ns.dir_prefix(new))
        except StoreError:
            self._interrupted[new] = old
            self._ns.forget_tree(old)
            self._ns.forget_tree(new)
            raise
        self._interrupted.pop(new, None)
        self._ns.renamed(old, new, DIRECTORY)

    # -- files -------------------------------------------------------------------------

    def _open_for_write(self, path: str, attrs: Attrs | None, mode: int | None) -> OpenFile:
        open_file = self._open.get(path)
        if open_file is None:
            open_file = OpenFile(path, self._ns.object_key(path), attrs, mode, self._staging)
            self._open[path] = open_file
        open_file.handles += 1
        return open_file

    async def _close_for_write(self, open_file: OpenFile) -> None:
        open_file.handles -= 1
        if open_file.handles == 0:
            if self._open.get(open_file.path) is open_file:
                del self._open[open_file.path]
            await open_file.close()

    def _new_handle(self, path: str, attrs: Attrs, open_file: OpenFile | None) -> FileHandle:
        reader = self._readers(self._ns.object_key(path), attrs.size, attrs.etag)
        handle = FileHandle(path, reader, attrs, open_file, generation=self._ns.generation)
        self._handles.add(handle)
        if open_file is None:
            self._reading[path] = handle
        return handle

    async def open(self, path: str, flags: int) -> tuple[FileHandle, Attrs]:
        """Open a file; for writing, through the path's shared `OpenFile`."""
        attrs = await self.stat(path, current=True)
        if attrs.is_dir:
            raise IsADirectory("is a directory", key=self._ns.dir_prefix(path))
        open_file = None
        if flags & os.O_ACCMODE != os.O_RDONLY:
            self._check_writable(path)
            open_file = self._open_for_write(path, attrs, None)
            if flags & os.O_TRUNC:
                try:
                    await open_file.truncate(self._store, 0)
                except BaseException:
                    await self._close_for_write(open_file)
                    raise
        return self._new_handle(path, attrs, open_file), attrs

    async def create(
        self, path: str, mode: int, owner: tuple[int, int] | None = None
    ) -> tuple[FileHandle, Attrs]:
        """A new file, uploaded (``If-None-Match: *``) when it is first flushed or closed.

        ``owner`` (uid, gid) is stored with it: a creator other than the mount's user.
        """
        self._check_new_name(path)
        self._entries_changed(path)
        open_file = self._open_for_write(path, None, mode)
        if owner is not None:
            open_file.uid, open_file.gid = owner
        self._reuse_doomed(path, open_file)
        attrs = open_file.attrs()
        return self._new_handle(path, attrs, open_file), attrs

    async def read(self, handle: FileHandle, offset: int, size: int) -> bytes | memoryview:
        """Staged bytes when the file is being written on this mount, else from the store:
        the version opened, or ESTALE once it is gone (replaced or deleted)."""
        open_file = handle.open_file or self._open.get(handle.path)
        if open_file is not None:
            data = open_file.read(offset, size)
            if data is not None:
                return data
        try:
            return await handle.reader.read(offset, size)
        except ObjectMissing as exc:
            raise exc.retyped(Stale, "the version this descriptor opened was deleted") from None

    async def write(self, handle: FileHandle, offset: int, data: bytes) -> int:
        if handle.open_file is None:
            raise BadHandle("not open for writing", key=self._ns.object_key(handle.path))
        self._check_size(handle.path, offset + len(data))
        handle.flushed = False
        return await handle.open_file.write(self._store, self._uploader, offset, data)

    async def _commit(self, open_file: OpenFile) -> Attrs | None:
        attrs = await open_file.commit(self._store, self._uploader)
        if attrs is not None:
            self._ns.stored(open_file.path, attrs)
        return attrs

    async def flush(self, handle: FileHandle) -> None:
        """close() and fsync(): the file's changes are in the store when this returns."""
        if handle.open_file is not None:
            handle.flushed = True
            await self._commit(handle.open_file)

    def report_unfinished(self) -> None:
        """The mount is abandoned with requests in flight: one line for each file that
        may not be in the bucket, saying whether that is certain, and where its data is."""
        for open_file in self._open.values():
            if (state := open_file.unfinished()) is not None:
                staged = open_file.staged
                where = f"; its data is kept in {staged.path}" if staged is not None else ""
                log.error("%r (%d bytes): %s%s", open_file.key, open_file.size, state, where)

    async def abandon_open_files(self) -> int:
        """The mount is going: files still open for writing are not uploaded (see
        `OpenFile.abandon`); how many had changes that were not."""
        kept = sum([await open_file.abandon() for open_file in list(self._open.values())])
        self._open.clear()
        return kept

    async def release(self, handle: FileHandle) -> None:
        """The descriptor is gone; the last handle of a file commits what no flush did (mmap).

        A failed commit is raised once the handle is let go (its data kept), for the FUSE
        binding to log: release is the operation that failed.
        """
        self._handles.discard(handle)
        if self._reading.get(handle.path) is handle:
            self._show_other_reader(handle.path)
        await handle.reader.close()
        open_file = handle.open_file
        failure = None
        if open_file is not None:
            try:
                if open_file.handles == 1 and open_file.failure is None:
                    await self._commit(open_file)
            except FsError as exc:
                failure = exc
            finally:
                await self._close_for_write(open_file)
        await self._delete_when_unused(handle.path)
        if failure is not None:
            raise failure
