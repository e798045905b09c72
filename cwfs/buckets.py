"""Every bucket of an account in one mount (``--all-buckets``): a directory per bucket.

The root lists the buckets the credentials own (ListBuckets), again once the metadata
TTL has passed. Below a bucket's directory every request goes to that bucket's own
`Filesystem`, built the first time the bucket is used (its store signed for the
bucket's region, its LOTA host, its cache directory and uploads: `OpenBucket`), so each
behaves exactly as a mount of that one bucket; paths lose their first component on the
way in. A bucket's directory is known from the listing alone: ``ls -l`` of the root
builds no bucket's filesystem. What has no bucket to go to is refused: mkdir, rmdir,
files and renames at the root with EPERM (buckets are made and deleted elsewhere), a
rename from one bucket to another with EXDEV, so that ``mv`` copies and deletes instead.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from weakref import WeakKeyDictionary

import trio

from cwfs.attrs import DIRECTORY, Attrs
from cwfs.errors import CrossDevice, NotFound, NotPermitted
from cwfs.fs import AttrChanges, DirListing, FileHandle, Filesystem
from cwfs.listing import join

log = logging.getLogger(__name__)

OpenBucket = Callable[[str], Awaitable[Filesystem]]


class BucketDirectory:
    """An open directory inside a bucket, as the mount shows it: under the bucket's name.

    ``list_dir`` answers at once (the kernel's opendir); the bucket's filesystem is
    found, or built, when the first entry is asked for."""

    def __init__(self, path: str, open_listing: Callable[[], Awaitable[DirListing]]) -> None:
        self.path = path
        self.lock = trio.Lock()
        self._open_listing = open_listing
        self._listing: DirListing | None = None

    async def entry(self, index: int) -> tuple[str, Attrs] | None:
        if self._listing is None:
            self._listing = await self._open_listing()
        return await self._listing.entry(index)

    async def close(self) -> None:
        if self._listing is not None:
            await self._listing.close()


class Buckets:
    """The filesystem core of an ``--all-buckets`` mount: the root, and a router."""

    def __init__(
        self, list_buckets: Callable[[], Awaitable[list[str]]], open_bucket: OpenBucket, ttl: float
    ) -> None:
        self._list_buckets = list_buckets
        self._open_bucket = open_bucket
        self._ttl = ttl
        self._listed: tuple[float, frozenset[str]] | None = None  # when, and the names
        self._listing = trio.Lock()
        self._opening = trio.Lock()
        self.cores: dict[str, Filesystem] = {}  # the buckets used so far
        # The bucket of each open file; kept while the handle lives, so that the log
        # line of a failed release still names it.
        self._handles: WeakKeyDictionary[FileHandle, str] = WeakKeyDictionary()

    async def names(self) -> frozenset[str]:
        """The account's buckets, listed again once the TTL has passed."""
        async with self._listing:
            now = trio.current_time()
            if self._listed is None or now - self._listed[0] >= self._ttl:
                self._listed = (now, frozenset(await self._list_buckets()))
            return self._listed[1]

    async def _core(self, bucket: str) -> Filesystem:
        """The filesystem of ``bucket``, built on its first use."""
        core = self.cores.get(bucket)
        if core is not None:
            return core
        if bucket not in await self.names():
            raise NotFound("no such bucket", key=bucket)
        async with self._opening:
            if bucket not in self.cores:
                self.cores[bucket] = await self._open_bucket(bucket)
                log.info("bucket %r opened", bucket)
        return self.cores[bucket]

    async def _route(self, path: str) -> tuple[Filesystem, str]:
        """The filesystem ``path`` is in, and the path there; not for the root itself."""
        bucket, _, rest = path.partition("/")
        return await self._core(bucket), rest

    async def _route_entry(self, path: str, what: str) -> tuple[Filesystem, str]:
        """As `_route`, for something a bucket holds: not the root, nor a bucket."""
        if "/" not in path:
            reason = "buckets are made and deleted elsewhere" if path else "the mount's root"
            raise NotPermitted(f"cannot {what} at the root: {reason}", key=path)
        return await self._route(path)

    def _of(self, handle: FileHandle) -> Filesystem:
        return self.cores[self._handles[handle]]

    def _opened(self, path: str, answer: tuple[FileHandle, Attrs]) -> tuple[FileHandle, Attrs]:
        self._handles[answer[0]] = path.partition("/")[0]
        return answer

    def shown_path(self, handle: FileHandle) -> str:
        """Where the open file is in the mount: in its bucket's directory."""
        return join(self._handles[handle], handle.path)

    async def find(self, path: str, current: bool = False) -> Attrs | None:
        if "/" not in path:  # the root, or a bucket: known from the listing
            return DIRECTORY if not path or path in await self.names() else None
        core, rest = await self._route(path)
        return await core.find(rest, current)

    async def stat(self, path: str, current: bool = False) -> Attrs:
        attrs = await self.find(path, current)
        if attrs is None:
            raise NotFound("no such file or directory", key=path)
        return attrs

    def handle_attrs(self, handle: FileHandle) -> Attrs:
        return self._of(handle).handle_attrs(handle)

    async def setattr(
        self, path: str | None, changes: AttrChanges, handle: FileHandle | None
    ) -> Attrs:
        if handle is not None:
            rest = None if path is None else path.partition("/")[2]
            return await self._of(handle).setattr(rest, changes, handle)
        if not path:
            raise NotPermitted("the root of an --all-buckets mount has no attributes to set")
        core, rest = await self._route(path)
        return await core.setattr(rest, changes, None)

    def forgotten(self, path: str) -> None:
        bucket, _, rest = path.partition("/")
        if rest and (core := self.cores.get(bucket)) is not None:
            core.forgotten(rest)

    def list_dir(self, path: str) -> DirListing | BucketDirectory:
        if not path:
            return DirListing("", self._bucket_pages, dict, _never, _as_is, _nothing)

        async def open_listing() -> DirListing:
            core, rest = await self._route(path)
            return core.list_dir(rest)

        return BucketDirectory(path, open_listing)

    async def _bucket_pages(self) -> AsyncIterator[list[tuple[str, Attrs]]]:
        yield [(name, DIRECTORY) for name in sorted(await self.names())]

    async def make_dir(
        self, path: str, mode: int | None = None, owner: tuple[int, int] | None = None
    ) -> Attrs:
        core, rest = await self._route_entry(path, "make a directory")
        return await core.make_dir(rest, mode, owner)

    async def remove_dir(self, path: str) -> None:
        core, rest = await self._route_entry(path, "remove a directory")
        await core.remove_dir(rest)

    async def unlink(self, path: str) -> None:
        core, rest = await self._route_entry(path, "remove a file")
        await core.unlink(rest)

    async def make_node(
        self, path: str, mode: int, rdev: int, owner: tuple[int, int] | None = None
    ) -> Attrs:
        core, rest = await self._route_entry(path, "make a special file")
        return await core.make_node(rest, mode, rdev, owner)

    async def symlink(self, path: str, target: str) -> Attrs:
        core, rest = await self._route_entry(path, "make a symbolic link")
        return await core.symlink(rest, target)

    async def readlink(self, path: str) -> str:
        core, rest = await self._route_entry(path, "read a link")
        return await core.readlink(rest)

    async def rename(
        self, old: str, new: str, no_replace: bool = False, exchange: bool = False
    ) -> None:
        """Within one bucket, its filesystem's rename; between two, EXDEV."""
        source, old_rest = await self._route_entry(old, "rename a bucket")
        if new.partition("/")[0] != old.partition("/")[0]:
            raise CrossDevice(f"{old!r} and {new!r} are in different buckets", key=old_rest)
        target, new_rest = await self._route_entry(new, "rename a bucket")
        assert source is target
        await source.rename(old_rest, new_rest, no_replace, exchange)

    async def open(self, path: str, flags: int) -> tuple[FileHandle, Attrs]:
        core, rest = await self._route_entry(path, "open a file")
        return self._opened(path, await core.open(rest, flags))

    async def create(
        self, path: str, mode: int, owner: tuple[int, int] | None = None
    ) -> tuple[FileHandle, Attrs]:
        core, rest = await self._route_entry(path, "create a file")
        return self._opened(path, await core.create(rest, mode, owner))

    async def read(self, handle: FileHandle, offset: int, size: int) -> bytes | memoryview:
        return await self._of(handle).read(handle, offset, size)

    async def write(self, handle: FileHandle, offset: int, data: bytes) -> int:
        return await self._of(handle).write(handle, offset, data)

    async def flush(self, handle: FileHandle) -> None:
        await self._of(handle).flush(handle)

    async def release(self, handle: FileHandle) -> None:
        await self._of(handle).release(handle)

    def report_unfinished(self) -> None:
        for core in self.cores.values():
            core.report_unfinished()

    async def abandon_open_files(self) -> int:
        return sum([await core.abandon_open_files() for core in self.cores.values()])


def _never(path: str) -> bool:
    return False


def _as_is(path: str, attrs: Attrs) -> Attrs:
    return attrs


def _nothing(path: str, attrs: Attrs) -> None:
    return None
