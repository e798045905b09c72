"""The FUSE operations: a thin translation between pyfuse3 requests and the namespace.

Each handler resolves inode numbers to paths (`InodeTable`), asks the `Namespace`, an
open file's reader or its `OpenFile` (staged writes), and turns `StoreError` into the
matching errno.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyfuse3
import trio
from cachetools import LRUCache

from cwfs.config import Config
from cwfs.inodes import InodeTable
from cwfs.metacache import DIRECTORY, Attrs
from cwfs.namespace import Namespace, join
from cwfs.openfile import OpenFile
from cwfs.prefetch import Prefetcher
from cwfs.rename import Renamer
from cwfs.staging import StagingArea
from cwfs.store import PreconditionFailed, StoreError
from cwfs.upload import Uploader

log = logging.getLogger(__name__)

T = TypeVar("T")
BLOCK_SIZE = 1 << 20
KERNEL_TIMEOUT_MAX = 365 * 24 * 3600.0  # what "indefinite" tells the kernel
STATFS_BLOCKS = 1 << 40  # an object store has no meaningful capacity; report plenty


def fuse_errors(handler: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Turn store failures and forgotten inodes into the errno the kernel expects."""

    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return await handler(*args, **kwargs)
        except StoreError as exc:
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    return wrapper


def _decode(name: bytes) -> str:
    """A kernel name as a key component; names that are not UTF-8 cannot exist in S3."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise pyfuse3.FUSEError(errno.ENOENT) from None


@dataclass
class DirHandle:
    """An open directory: entries fetched so far, and the listing that yields more.

    Files created on this mount and not yet uploaded are appended once the listing
    is complete, so ``ls`` shows a file while it is being written.
    """

    path: str
    pages: AsyncIterator[list[tuple[str, Attrs]]]
    local: Callable[[], dict[str, Attrs]]
    entries: list[tuple[str, Attrs]] = field(default_factory=list)
    complete: bool = False
    lock: trio.Lock = field(default_factory=trio.Lock)

    async def entry(self, index: int) -> tuple[str, Attrs] | None:
        """Entry ``index`` of the listing, fetching pages until it exists or the end."""
        while index >= len(self.entries) and not self.complete:
            try:
                self.entries.extend(await self.pages.__anext__())
            except StopAsyncIteration:
                self.complete = True
                listed = {name for name, _ in self.entries}
                self.entries.extend((name, attrs) for name, attrs in self.local().items() if name not in listed)
        return self.entries[index] if index < len(self.entries) else None


@dataclass
class FileHandle:
    path: str
    reader: Prefetcher
    open_file: OpenFile | None = None  # set when opened for writing
    # Flushed since its last write: its close() has (probably) begun, and its RELEASE,
    # which the kernel sends after close() returns, may still be on its way.
    flushed: bool = False


class Filesystem(pyfuse3.Operations):
    """pyfuse3 operations for one mounted bucket."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(
        self,
        config: Config,
        namespace: Namespace,
        staging: StagingArea,
        uploader: Uploader,
        renamer: Renamer,
        readers: Callable[[str, int, str | None], Prefetcher],
    ) -> None:
        super().__init__()
        self._config = config
        self._ns = namespace
        self._store = namespace.store
        self._staging = staging
        self._uploader = uploader
        self._renamer = renamer
        self._readers = readers
        # Directory renames that failed midway, destination -> source: the destination
        # is hidden on this mount until the same rename is repeated and completes it.
        self._interrupted: dict[str, str] = {}
        self.inodes = InodeTable()
        self._handles = itertools.count(1)
        self._dirs: dict[int, DirHandle] = {}
        self._files: dict[int, FileHandle] = {}
        self._open: dict[str, OpenFile] = {}
        # ETag each path had when last opened: an unchanged object keeps the page cache.
        self._opened_etags: LRUCache[str, str] = LRUCache(config.metadata_cache_entries)
        self._mounted_at_ns = time.time_ns()

    # -- attributes --------------------------------------------------------------------

    def _attributes(self, inode: int, attrs: Attrs) -> pyfuse3.EntryAttributes:
        cfg = self._config
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.generation = 0
        entry.entry_timeout = entry.attr_timeout = min(cfg.metadata_ttl, KERNEL_TIMEOUT_MAX)
        if cfg.exact_metadata and not attrs.exact:
            entry.attr_timeout = 0  # a readdir's view: the kernel asks again on stat
        if attrs.is_dir:
            entry.st_mode = stat.S_IFDIR | cfg.dir_mode
        else:
            entry.st_mode = stat.S_IFREG | (cfg.file_mode if attrs.mode is None else attrs.mode)
        # nlink 1 on directories tells find(1) not to count subdirectories from it.
        entry.st_nlink = 1
        entry.st_uid = cfg.uid
        entry.st_gid = cfg.gid
        entry.st_size = attrs.size
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = (attrs.size + 511) // 512
        # Implicit directories have no timestamp of their own: show the mount time.
        mtime_ns = attrs.mtime_ns or self._mounted_at_ns
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = mtime_ns
        return entry

    async def _find(self, path: str) -> Attrs | None:
        """Attributes of ``path`` or None: a file open for writing wins over the store."""
        open_file = self._open.get(path)
        if open_file is not None and not open_file.unlinked:
            return open_file.attrs()
        if path in self._interrupted:
            return None
        return await self._ns.stat(path)

    async def _stat(self, path: str) -> Attrs:
        attrs = await self._find(path)
        if attrs is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return attrs

    def _child(self, parent_inode: int, name: bytes) -> str:
        return join(self.inodes.path(parent_inode), _decode(name))

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.inodes.path(parent_inode)
        if name == b".":
            path = parent
        elif name == b"..":
            path = parent.rpartition("/")[0]
        else:
            path = join(parent, _decode(name))
        attrs = await self._find(path)
        if attrs is None:
            missing = pyfuse3.EntryAttributes()
            missing.st_ino = 0
            missing.entry_timeout = min(self._config.negative_ttl, KERNEL_TIMEOUT_MAX)
            return missing
        return self._attributes(self.inodes.ref(path), attrs)

    @fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(inode, await self._stat(self.inodes.path(inode)))

    @fuse_errors
    async def setattr(
        self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields, fh: int | None, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        """Truncate, and keep mtime and mode as object metadata; ownership is mount-wide.

        A change through a descriptor open for writing (``ftruncate``), or by path while
        one is in use, goes out with that file's close or fsync, as its writes do. Any
        other change by path is in the store when this returns: a file just closed may
        still count as open here, because the kernel sends its RELEASE after ``close()``
        returned, so the change holds a handle of its own while it is committed.
        """
        path = self.inodes.path(inode)
        attrs = await self._stat(path)
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        mode = stat.S_IMODE(attr.st_mode) if fields.update_mode else None
        if attrs.is_dir or not (fields.update_size or mtime is not None or mode is not None):
            return self._attributes(inode, attrs)  # chown, atime, directory times: accepted, not stored
        open_file = self._open_for_write(path, attrs, None)
        try:
            if fields.update_size:
                await open_file.truncate(self._store, attr.st_size)
            if mtime is not None or mode is not None:
                open_file.set_metadata(mtime, mode)
            if fh is None and not self._in_use(open_file):
                await self._commit(open_file)
            return self._attributes(inode, open_file.attrs())
        finally:
            self._close_for_write(open_file)

    def _in_use(self, open_file: OpenFile) -> bool:
        """Whether a descriptor is writing ``open_file``: opened or written since its last flush."""
        return any(h.open_file is open_file and not h.flushed for h in self._files.values())

    # -- directories -------------------------------------------------------------------

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            path = self.inodes.forget(inode, count)
            if path is not None:
                self._ns.release_dir(path)

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self.inodes.path(inode)
        fh = next(self._handles)
        self._dirs[fh] = DirHandle(path, self._ns.list_dir(path), functools.partial(self._local_entries, path))
        return fh

    def _local_entries(self, directory: str) -> dict[str, Attrs]:
        prefix = directory + "/" if directory else ""
        return {
            path[len(prefix) :]: f.attrs()
            for path, f in self._open.items()
            if path.startswith(prefix) and "/" not in path[len(prefix) :] and not f.unlinked
        }

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        async with handle.lock:
            index = start_id
            while (item := await handle.entry(index)) is not None:
                name, attrs = item
                path = join(handle.path, name)
                if path in self._interrupted:
                    index += 1
                    continue
                inode = self.inodes.ref(path)
                if not pyfuse3.readdir_reply(token, name.encode("utf-8"), self._attributes(inode, attrs), index + 1):
                    self.inodes.forget(inode, 1)
                    return
                index += 1

    async def releasedir(self, fh: int) -> None:
        handle = self._dirs.pop(fh, None)
        if handle is not None:
            await handle.pages.aclose()  # type: ignore[attr-defined]

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        try:
            await self._ns.make_dir(path)
        except PreconditionFailed:
            raise pyfuse3.FUSEError(errno.EEXIST) from None
        return self._attributes(self.inodes.ref(path), DIRECTORY)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        if self._local_entries(path):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        await self._ns.remove_dir(path)

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        open_file = self._open.get(path)
        if open_file is not None:
            open_file.unlinked = True
            del self._open[path]
            if open_file.etag is None:
                self._ns.removed(path)
                return  # never uploaded: nothing to delete
        await self._ns.remove_file(path)

    @fuse_errors
    async def rename(
        self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes, flags: int, ctx: pyfuse3.RequestContext
    ) -> None:
        if flags & pyfuse3.RENAME_EXCHANGE:
            log.warning("rename with RENAME_EXCHANGE is not supported: S3 cannot swap two keys atomically")
            raise pyfuse3.FUSEError(errno.EINVAL)
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        attrs = await self._stat(old)
        target = await self._find(new)
        if target is not None and flags & pyfuse3.RENAME_NOREPLACE:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if attrs.is_dir:
            await self._rename_dir(old, new, target)
        else:
            await self._rename_file(old, new, attrs, target, bool(flags & pyfuse3.RENAME_NOREPLACE))
        self.inodes.rename(old, new)

    async def _rename_file(self, old: str, new: str, attrs: Attrs, target: Attrs | None, no_replace: bool) -> None:
        if target is not None and target.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        open_file = self._open.get(old)
        if open_file is not None:
            attrs = await self._commit(open_file) or open_file.attrs()  # its data first, under the old name
        try:
            new_etag = await self._renamer.rename(self._ns.object_key(old), self._ns.object_key(new), attrs.size, attrs.etag, no_replace)
        except PreconditionFailed:
            raise pyfuse3.FUSEError(errno.EEXIST if no_replace else errno.ESTALE) from None
        attrs = dataclasses.replace(attrs, etag=new_etag or attrs.etag)
        replaced = self._open.pop(new, None)
        if replaced is not None:
            replaced.unlinked = True  # its writers now write to a file with no name
        if open_file is not None:
            del self._open[old]
            open_file.moved(new, self._ns.object_key(new), attrs.etag)
            self._open[new] = open_file
        self._ns.renamed(old, new, attrs)

    async def _rename_dir(self, old: str, new: str, target: Attrs | None) -> None:
        if target is not None and not target.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        if target is not None and not await self._ns.is_empty_dir(new):
            raise pyfuse3.FUSEError(errno.ENOTEMPTY)
        if any(path.startswith(old + "/") for path in self._open):
            log.warning("cannot rename %r: files below it are open for writing", old)
            raise pyfuse3.FUSEError(errno.EBUSY)
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

    def _close_for_write(self, open_file: OpenFile) -> None:
        open_file.handles -= 1
        if open_file.handles == 0:
            if self._open.get(open_file.path) is open_file:
                del self._open[open_file.path]
            open_file.close()

    def _new_handle(self, path: str, attrs: Attrs, open_file: OpenFile | None) -> pyfuse3.FileInfo:
        fh = next(self._handles)
        reader = self._readers(self._ns.object_key(path), attrs.size, attrs.etag)
        self._files[fh] = FileHandle(path, reader, open_file)
        unchanged = open_file is None and attrs.etag is not None and self._opened_etags.get(path) == attrs.etag
        if attrs.etag is not None:
            self._opened_etags[path] = attrs.etag
        return pyfuse3.FileInfo(fh=fh, keep_cache=unchanged, direct_io=self._config.direct_io)

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        path = self.inodes.path(inode)
        attrs = await self._stat(path)
        if attrs.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        open_file = None
        if flags & os.O_ACCMODE != os.O_RDONLY:
            if self._config.read_only:
                raise pyfuse3.FUSEError(errno.EROFS)
            open_file = self._open_for_write(path, attrs, None)
            if flags & os.O_TRUNC:
                await open_file.truncate(self._store, 0)
        return self._new_handle(path, attrs, open_file)

    @fuse_errors
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        open_file = self._open_for_write(path, None, stat.S_IMODE(mode) & ~ctx.umask)
        attrs = open_file.attrs()
        return self._new_handle(path, attrs, open_file), self._attributes(self.inodes.ref(path), attrs)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        handle = self._files[fh]
        open_file = handle.open_file or self._open.get(handle.path)
        if open_file is not None:
            data = open_file.read(off, size)
            if data is not None:
                return data
        return await handle.reader.read(off, size)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._files[fh]
        if handle.open_file is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        handle.flushed = False
        return await handle.open_file.write(self._store, off, buf)

    async def _commit(self, open_file: OpenFile) -> Attrs | None:
        attrs = await open_file.commit(self._store, self._uploader)
        if attrs is not None:
            self._ns.stored(open_file.path, attrs)
        return attrs

    @fuse_errors
    async def flush(self, fh: int) -> None:
        handle = self._files[fh]
        if handle.open_file is not None:
            handle.flushed = True
            await self._commit(handle.open_file)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is None:
            return
        await handle.reader.close()
        open_file = handle.open_file
        if open_file is None:
            return
        if open_file.handles == 1 and open_file.failure is None:
            try:
                await self._commit(open_file)  # e.g. written through mmap, never flushed
            except StoreError:
                pass  # logged; the data is kept
        self._close_for_write(open_file)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = data.f_bfree = data.f_bavail = STATFS_BLOCKS
        data.f_files = data.f_ffree = data.f_favail = STATFS_BLOCKS
        data.f_namemax = 255
        return data
