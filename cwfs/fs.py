"""The FUSE operations: a thin translation between pyfuse3 requests and the namespace.

Each handler resolves inode numbers to paths (`InodeTable`), asks the `Namespace` or
an open file's reader, and turns `StoreError` into the matching errno.
"""

from __future__ import annotations

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

from cwfs.config import Config
from cwfs.inodes import ROOT_INODE, InodeTable
from cwfs.metacache import Attrs
from cwfs.namespace import Namespace, join
from cwfs.reader import RangeReader, Reader
from cwfs.store import StoreError

log = logging.getLogger(__name__)

T = TypeVar("T")
BLOCK_SIZE = 1 << 20
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
    """An open directory: entries fetched so far, and the listing that yields more."""

    path: str
    pages: AsyncIterator[list[tuple[str, Attrs]]]
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
        return self.entries[index] if index < len(self.entries) else None


@dataclass
class FileHandle:
    path: str
    reader: Reader


class Filesystem(pyfuse3.Operations):
    """pyfuse3 operations for one mounted bucket."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, config: Config, namespace: Namespace) -> None:
        super().__init__()
        self._config = config
        self._ns = namespace
        self.inodes = InodeTable()
        self._handles = itertools.count(1)
        self._dirs: dict[int, DirHandle] = {}
        self._files: dict[int, FileHandle] = {}
        self._mounted_at = time.time()

    def _attributes(self, inode: int, attrs: Attrs) -> pyfuse3.EntryAttributes:
        cfg = self._config
        entry = pyfuse3.EntryAttributes()
        entry.st_ino = inode
        entry.generation = 0
        entry.entry_timeout = cfg.metadata_ttl
        entry.attr_timeout = cfg.metadata_ttl
        if attrs.is_dir:
            entry.st_mode = stat.S_IFDIR | cfg.dir_mode
        else:
            entry.st_mode = stat.S_IFREG | cfg.file_mode
        # nlink 1 on directories tells find(1) not to count subdirectories from it.
        entry.st_nlink = 1
        entry.st_uid = cfg.uid
        entry.st_gid = cfg.gid
        entry.st_size = attrs.size
        entry.st_blksize = BLOCK_SIZE
        entry.st_blocks = (attrs.size + 511) // 512
        # Implicit directories have no timestamp of their own: show the mount time.
        mtime_ns = int((attrs.mtime or self._mounted_at) * 1e9)
        entry.st_atime_ns = entry.st_mtime_ns = entry.st_ctime_ns = mtime_ns
        return entry

    async def _stat(self, path: str) -> Attrs:
        attrs = await self._ns.stat(path)
        if attrs is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return attrs

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.inodes.path(parent_inode)
        if name == b".":
            path = parent
        elif name == b"..":
            path = parent.rpartition("/")[0]
        else:
            path = join(parent, _decode(name))
        attrs = await self._ns.stat(path)
        if attrs is None:
            missing = pyfuse3.EntryAttributes()
            missing.st_ino = 0
            missing.entry_timeout = self._config.negative_ttl
            return missing
        return self._attributes(self.inodes.ref(path), attrs)

    @fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._attributes(inode, await self._stat(self.inodes.path(inode)))

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self.inodes.path(inode)
        fh = next(self._handles)
        self._dirs[fh] = DirHandle(path, self._ns.list_dir(path))
        return fh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        handle = self._dirs[fh]
        async with handle.lock:
            index = start_id
            while (item := await handle.entry(index)) is not None:
                name, attrs = item
                inode = self.inodes.ref(join(handle.path, name))
                if not pyfuse3.readdir_reply(token, name.encode("utf-8"), self._attributes(inode, attrs), index + 1):
                    self.inodes.forget(inode, 1)
                    return
                index += 1

    async def releasedir(self, fh: int) -> None:
        handle = self._dirs.pop(fh, None)
        if handle is not None:
            await handle.pages.aclose()  # type: ignore[attr-defined]

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        path = self.inodes.path(inode)
        attrs = await self._stat(path)
        if attrs.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        fh = next(self._handles)
        reader = RangeReader(self._ns.store, self._ns.object_key(path), attrs.size, attrs.etag)
        self._files[fh] = FileHandle(path, reader)
        return pyfuse3.FileInfo(fh=fh)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self._files[fh].reader.read(off, size)

    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None:
            await handle.reader.close()

    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = BLOCK_SIZE
        data.f_blocks = data.f_bfree = data.f_bavail = STATFS_BLOCKS
        data.f_files = data.f_ffree = data.f_favail = STATFS_BLOCKS
        data.f_namemax = 255
        return data
