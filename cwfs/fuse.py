"""The FUSE binding: pyfuse3 requests in, calls to the filesystem core (`cwfs.fs`) out.

It owns what only the kernel interface has: inode numbers (`InodeTable`), file and
directory handle numbers, `EntryAttributes`, readdir offsets, and the one place where
failures become errno (`edge`). A typed failure (`cwfs.errors`) becomes its errno, a
local OSError (the staging disk: ENOSPC, EFBIG...) its own, and anything else EIO with
its traceback in the log: one bad request never ends the mount.
"""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
from cachetools import LRUCache

from cwfs.attrs import Attrs
from cwfs.buckets import BucketDirectory, Buckets
from cwfs.config import Config
from cwfs.errors import BadHandle, FsError, NotFound, StoreError
from cwfs.fs import AttrChanges, DirListing, FileHandle, Filesystem
from cwfs.inodes import InodeTable
from cwfs.listing import join

log = logging.getLogger(__name__)

T = TypeVar("T")
P = ParamSpec("P")
BLOCK_SIZE = 1 << 20
KERNEL_TIMEOUT_MAX = 365 * 24 * 3600.0  # what "indefinite" tells the kernel
STATFS_BLOCKS = 1 << 40  # an object store has no meaningful capacity; report plenty
DOT_ENTRIES = 2  # "." and "..", at readdir offsets 1 and 2
HANDLE_REQUESTS = frozenset({"read", "write", "flush", "fsync", "release", "readdir", "releasedir"})


Handler = Callable[Concatenate["FuseOperations", P], Coroutine[Any, Any, T]]


def edge(handler: Handler[P, T]) -> Handler[P, T]:
    """Answer the kernel with an errno for any failure of ``handler``, logged once."""

    request = handler.__name__
    by_handle = request in HANDLE_REQUESTS

    @functools.wraps(handler)
    async def wrapper(self: FuseOperations, /, *args: P.args, **kwargs: P.kwargs) -> T:
        # Taken first: release lets go of its handle before its failure is logged.
        handle = self.handle(args) if by_handle else None
        try:
            return await handler(self, *args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except FsError as exc:
            self.log_failure(request, self.where(request, args, handle), exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            err = exc.errno or errno.EIO
            where = self.where(request, args, handle)
            log.error(
                "%s %s: local I/O failed: %s -> %s",
                request,
                where,
                exc,
                errno.errorcode.get(err, err),
            )
            raise pyfuse3.FUSEError(err) from None
        except Exception:
            where = self.where(request, args, handle)
            log.exception("%s %s: unexpected error, answered EIO", request, where)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _decode(name: bytes) -> str:
    """A kernel name as a key component; names that are not UTF-8 cannot exist in S3."""
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise NotFound(f"name {name!r} is not UTF-8") from None


class FuseOperations(pyfuse3.Operations):
    """pyfuse3 operations for one mounted bucket."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, config: Config, core: Filesystem | Buckets) -> None:
        super().__init__()
        self._config = config
        self._core = core
        self.inodes = InodeTable()
        self._numbers = itertools.count(1)
        self._dirs: dict[int, DirListing | BucketDirectory] = {}
        self._files: dict[int, FileHandle] = {}
        self._file_inodes: dict[int, int] = {}  # handle number -> inode
        # ETag each path had when last opened: an unchanged object keeps the page cache.
        self._opened_etags: LRUCache[str, str] = LRUCache(config.metadata_cache_entries)
        self._mounted_at_ns = time.time_ns()

    @staticmethod
    def log_failure(request: str, where: str, exc: FsError) -> None:
        """One line per failure, with all an operator needs to act on it: the operation,
        the path, the reason, the errno, and the facts of a failed S3 request (`context`).
        ENOENT at DEBUG (tools probe names all the time); what the store refused (any
        failure with an S3 error code, EEXIST of a lost race included) and every ESTALE
        or EIO at WARNING; the caller's own mistakes at INFO."""
        if isinstance(exc, NotFound):
            level = logging.DEBUG
        elif isinstance(exc, StoreError) or exc.code or exc.errno in (errno.ESTALE, errno.EIO):
            level = logging.WARNING
        else:
            level = logging.INFO
        context = f" ({exc.context()})" if exc.context() else ""
        code = errno.errorcode.get(exc.errno, str(exc.errno))
        log.log(level, "%s %s: %s%s -> %s", request, where, exc.message, context, code)

    def handle(self, args: tuple[Any, ...]) -> FileHandle | DirListing | BucketDirectory | None:
        """The open file or directory a request on a handle (its first argument) is about."""
        return self._files.get(args[0]) or self._dirs.get(args[0])

    def where(
        self,
        request: str,
        args: tuple[Any, ...],
        handle: FileHandle | DirListing | BucketDirectory | None,
    ) -> str:
        """The path ``request`` is about, for its log line: its arguments are numbers
        (``handle``: of a request on an open file or directory, as it began)."""
        number = args[0]
        if isinstance(handle, FileHandle):
            return repr(self._core.shown_path(handle))
        if request in HANDLE_REQUESTS:
            return repr(handle.path) if handle is not None else f"(handle {number})"
        try:
            path = self.inodes.path(number)
            return repr(join(path, _decode(args[1])) if isinstance(args[1], bytes) else path)
        except FsError:
            return f"(inode {number})"

    def _attributes(self, inode: int, attrs: Attrs) -> pyfuse3.EntryAttributes:
        cfg = self._config
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.generation = 0
        entry.entry_timeout = entry.attr_timeout = min(cfg.metadata_ttl, KERNEL_TIMEOUT_MAX)
        if cfg.exact_metadata and not attrs.exact:
            entry.attr_timeout = 0  # a readdir's view: the kernel asks again on stat
        default_mode = cfg.dir_mode if attrs.is_dir else cfg.file_mode
        permissions = default_mode if attrs.mode is None else attrs.mode
        if attrs.is_dir:
            entry.st_mode = stat.S_IFDIR | permissions
        elif attrs.is_link:
            entry.st_mode = stat.S_IFLNK | 0o777
        else:
            entry.st_mode = (attrs.special or stat.S_IFREG) | permissions
            entry.st_rdev = attrs.rdev
        entry.st_nlink = 1  # on directories: tells find(1) not to count subdirectories from it
        entry.st_uid = cfg.uid if attrs.uid is None else attrs.uid
        entry.st_gid = cfg.gid if attrs.gid is None else attrs.gid
        entry.st_size = attrs.size
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = (attrs.size + 511) // 512
        mtime_ns = attrs.mtime_ns or self._mounted_at_ns  # implicit directories: the mount time
        entry.st_atime_ns = entry.st_mtime_ns = mtime_ns
        entry.st_ctime_ns = max(attrs.ctime_ns, mtime_ns)
        return entry

    def _child(self, parent_inode: int, name: bytes) -> str:
        return join(self.inodes.path(parent_inode), _decode(name))

    def _file(self, fh: int) -> FileHandle:
        handle = self._files.get(fh)
        if handle is None:
            raise BadHandle(f"no open file handle {fh}")
        return handle

    @edge
    async def lookup(
        self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        parent = self.inodes.path(parent_inode)
        if name == b".":
            path = parent
        elif name == b"..":
            path = parent.rpartition("/")[0]
        else:
            path = join(parent, _decode(name))
        attrs = await self._core.find(path)
        if attrs is None:
            missing = pyfuse3.EntryAttributes()
            missing.st_ino = 0
            missing.entry_timeout = min(self._config.negative_ttl, KERNEL_TIMEOUT_MAX)
            return missing
        return self._attributes(self.inodes.ref(path), attrs)

    @edge
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        try:
            path = self.inodes.path(inode)
        except NotFound:
            handle = self._open_file_of(inode)
            if handle is None:
                raise
            entry = self._attributes(inode, self._core.handle_attrs(handle))
            entry.st_nlink = 0  # open, but its name is gone
            return entry
        return self._attributes(inode, await self._core.stat(path))

    def _open_file_of(self, inode: int) -> FileHandle | None:
        """An open descriptor of ``inode``: what still knows a file whose name is gone."""
        fh = next((fh for fh, number in self._file_inodes.items() if number == inode), None)
        return None if fh is None else self._files.get(fh)

    @edge
    async def setattr(
        self,
        inode: int,
        attr: pyfuse3.EntryAttributes,
        fields: pyfuse3.SetattrFields,
        fh: int | None,
        ctx: pyfuse3.RequestContext,
    ) -> pyfuse3.EntryAttributes:
        changes = AttrChanges(
            size=attr.st_size if fields.update_size else None,
            mtime_ns=attr.st_mtime_ns if fields.update_mtime else None,
            mode=stat.S_IMODE(attr.st_mode) if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None,
        )
        handle = None if fh is None else self._file(fh)
        try:
            path: str | None = self.inodes.path(inode)
        except NotFound:
            if handle is None:
                raise
            path = None  # unlinked while open: changed through its descriptor
        return self._attributes(inode, await self._core.setattr(path, changes, handle))

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            path = self.inodes.forget(inode, count)
            if path is not None:
                self._core.forgotten(path)

    @edge
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        fh = next(self._numbers)
        self._dirs[fh] = self._core.list_dir(self.inodes.path(inode))
        return fh

    @edge
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        listing = self._dirs.get(fh)
        if listing is None:
            raise BadHandle(f"no open directory handle {fh}")
        async with listing.lock:
            if not await self._dot_entries(listing.path, start_id, token):
                return
            index = max(start_id - DOT_ENTRIES, 0)
            while (item := await listing.entry(index)) is not None:
                name, attrs = item
                inode = self.inodes.ref(join(listing.path, name))
                entry = self._attributes(inode, attrs)
                if not pyfuse3.readdir_reply(
                    token, name.encode("utf-8"), entry, index + DOT_ENTRIES + 1
                ):
                    self.inodes.forget(inode, 1)
                    return
                index += 1

    async def _dot_entries(self, path: str, start_id: int, token: pyfuse3.ReaddirToken) -> bool:
        """``.`` and ``..`` first, as every filesystem lists them; False when the buffer is full.

        The kernel takes no reference for them, so none is counted here either.
        """
        parent = path.rpartition("/")[0]
        for offset, (name, target) in enumerate(((b".", path), (b"..", parent)), 1):
            if start_id < offset:
                attrs = self._attributes(self.inodes.number(target), await self._core.stat(target))
                if not pyfuse3.readdir_reply(token, name, attrs, offset):
                    return False
        return True

    @edge
    async def releasedir(self, fh: int) -> None:
        listing = self._dirs.pop(fh, None)
        if listing is not None:
            await listing.close()

    @edge
    async def mkdir(
        self, parent_inode: int, name: bytes, mode: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        attrs = await self._core.make_dir(path, stat.S_IMODE(mode) & ~ctx.umask, self._owner(ctx))
        return self._attributes(self.inodes.ref(path), attrs)

    @edge
    async def mknod(
        self, parent_inode: int, name: bytes, mode: int, rdev: int, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        mode = stat.S_IFMT(mode) | (stat.S_IMODE(mode) & ~ctx.umask)
        attrs = await self._core.make_node(path, mode, rdev, self._owner(ctx))
        return self._attributes(self.inodes.ref(path), attrs)

    def _owner(self, ctx: pyfuse3.RequestContext) -> tuple[int, int] | None:
        """The owner to store for what ``ctx``'s process creates: none when it is the mount's."""
        creator = (ctx.uid, ctx.gid)
        return None if creator == (self._config.uid, self._config.gid) else creator

    @edge
    async def symlink(
        self, parent_inode: int, name: bytes, target: bytes, ctx: pyfuse3.RequestContext
    ) -> pyfuse3.EntryAttributes:
        path = self._child(parent_inode, name)
        attrs = await self._core.symlink(path, os.fsdecode(target))
        return self._attributes(self.inodes.ref(path), attrs)

    @edge
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return os.fsencode(await self._core.readlink(self.inodes.path(inode)))

    @edge
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        await self._core.remove_dir(self._child(parent_inode, name))

    @edge
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self._child(parent_inode, name)
        await self._core.unlink(path)
        self.inodes.detach(path)  # a new file of that name is another inode

    @edge
    async def rename(
        self,
        parent_inode_old: int,
        name_old: bytes,
        parent_inode_new: int,
        name_new: bytes,
        flags: int,
        ctx: pyfuse3.RequestContext,
    ) -> None:
        old = self._child(parent_inode_old, name_old)
        new = self._child(parent_inode_new, name_new)
        await self._core.rename(
            old, new, bool(flags & pyfuse3.RENAME_NOREPLACE), bool(flags & pyfuse3.RENAME_EXCHANGE)
        )
        self.inodes.rename(old, new)

    def _file_info(self, handle: FileHandle, attrs: Attrs, inode: int) -> pyfuse3.FileInfo:
        """A handle number for ``handle``; the page cache is kept when the object is unchanged."""
        fh = next(self._numbers)
        self._files[fh] = handle
        self._file_inodes[fh] = inode
        path = self._core.shown_path(handle)  # in its bucket: another's may hold that key
        unchanged = (
            handle.open_file is None
            and attrs.etag is not None
            and self._opened_etags.get(path) == attrs.etag
        )
        if attrs.etag is not None:
            self._opened_etags[path] = attrs.etag
        return pyfuse3.FileInfo(fh=fh, keep_cache=unchanged, direct_io=self._config.direct_io)

    @edge
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        handle, attrs = await self._core.open(self.inodes.path(inode), flags)
        return self._file_info(handle, attrs, inode)

    @edge
    async def create(
        self, parent_inode: int, name: bytes, mode: int, flags: int, ctx: pyfuse3.RequestContext
    ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        umasked = stat.S_IMODE(mode) & ~ctx.umask
        handle, attrs = await self._core.create(path, umasked, self._owner(ctx))
        inode = self.inodes.ref(path)
        return self._file_info(handle, attrs, inode), self._attributes(inode, attrs)

    # pyfuse3 declares bytes but takes any contiguous buffer (PyObject_GetBuffer): a
    # memoryview of a read-ahead chunk goes to the kernel without a copy.
    @edge
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        return await self._core.read(self._file(fh), off, size)

    @edge
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self._core.write(self._file(fh), off, buf)

    @edge
    async def flush(self, fh: int) -> None:
        await self._core.flush(self._file(fh))

    @edge
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._core.flush(self._file(fh))

    @edge
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        self._file_inodes.pop(fh, None)
        if handle is not None:
            await self._core.release(handle)

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = data.f_bfree = data.f_bavail = STATFS_BLOCKS
        data.f_files = data.f_ffree = data.f_favail = STATFS_BLOCKS
        data.f_namemax = 255
        return data
