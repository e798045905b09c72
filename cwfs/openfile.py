"""A file open for writing: its staged content, the version it replaces, pending metadata.

All handles of one path share one `OpenFile`. Content is fetched from the store only
when first needed (a write or truncate to a non-zero size), so ``open(O_TRUNC)`` and
the kernel's truncate-after-open never download the old data. ``commit`` uploads
the content when it changed, or only the metadata (server-side) when just that did,
and does nothing for a file nobody changed.
"""

from __future__ import annotations

import logging
import stat
import time

import trio

from cwfs.attrs import MTIME_KEY, Attrs, object_metadata
from cwfs.errors import Exists, FsError, PreconditionFailed, Stale, StoreError
from cwfs.staging import StagedFile, StagingArea
from cwfs.store import ObjectStore, WriteCondition
from cwfs.streaming import PartStream
from cwfs.upload import Uploader

log = logging.getLogger(__name__)


class OpenFile:
    def __init__(
        self, path: str, key: str, base: Attrs | None, mode: int | None, staging: StagingArea
    ) -> None:
        self.path = path
        self.key = key
        self.etag = base.etag if base else None  # the version our next upload replaces
        self._base_size = base.size if base else 0
        self._staging = staging
        self.staged: StagedFile | None = None
        self.dirty = base is None  # a new file is created even if nothing is written
        self._metadata_dirty = False
        self.mtime_ns = base.mtime_ns if base else time.time_ns()
        self.mode = base.mode if base else mode
        self.uid = base.uid if base else None
        self.gid = base.gid if base else None
        self.special = base.special if base else 0  # a FIFO's type survives a chmod
        self.handles = 0
        self.unlinked = False
        self.failure: FsError | None = None
        self._lock = trio.Lock()
        self._stream: PartStream | None = None  # parts sent while the file is written
        self._mtime_set = False  # the mtime was set (utime), not only moved by writes

    @property
    def size(self) -> int:
        return self.staged.size if self.staged else self._base_size

    def attrs(self) -> Attrs:
        return Attrs(
            is_dir=False,
            size=self.size,
            mtime_ns=self.mtime_ns,
            etag=self.etag,
            mode=self.mode,
            uid=self.uid,
            gid=self.gid,
            special=self.special,
        )

    async def _stage(self, store: ObjectStore, fetch: bool = True) -> StagedFile:
        if self.staged is None:
            staged = self._staging.new_file(self.key, self.etag)
            if fetch and self._base_size and self.etag:
                try:
                    await store.download(self.key, str(staged.path), self.etag)
                except BaseException:
                    staged.discard()
                    raise
                staged.adopt_download()
            self.staged = staged
        return self.staged

    def _touch(self) -> None:
        if not self.dirty and self.staged is not None:
            # Changed again after an upload: a later one replaces that version. (Not at
            # the upload itself: a file closed after it is discarded, record and all.)
            self.staged.describe(self.key, self.etag)
        self.dirty = True
        self.mtime_ns = time.time_ns()

    async def write(self, store: ObjectStore, uploader: Uploader, offset: int, data: bytes) -> int:
        async with self._lock:
            staged = await self._stage(store)
            written = await staged.write(offset, data)
            self._touch()
            self._streamed(uploader, staged, offset, offset + written)
            return written

    async def truncate(self, store: ObjectStore, size: int) -> None:
        async with self._lock:
            staged = await self._stage(store, fetch=size > 0)
            old = staged.size
            await staged.resize(size)
            self._touch()
            if self._stream is not None:
                self._stream.changed(min(old, size), max(old, size), size, send=False)

    def _streamed(self, uploader: Uploader, staged: StagedFile, start: int, end: int) -> None:
        """Once the file holds more than a part, its parts go to the store while it is
        written (`cwfs.streaming`)."""
        if self._stream is None:
            if self.unlinked or not uploader.streams or staged.size <= uploader.part_size:
                return
            self._stream = uploader.stream(self.key, staged.fd, self._metadata())
        self._stream.changed(start, end, staged.size)

    def _drop_stream(self) -> None:
        """The upload being streamed will not be completed: abort it."""
        if self._stream is not None:
            self._stream.discard()
            self._stream = None

    def unlink(self) -> None:
        """The name is gone: nothing of this file is uploaded from now on."""
        self.unlinked = True
        self._drop_stream()

    def read(self, offset: int, size: int) -> bytes | None:
        """Staged bytes, or None when nothing is staged (read from the store then)."""
        return self.staged.read(offset, size) if self.staged else None

    def set_metadata(
        self,
        mtime_ns: int | None = None,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
    ) -> None:
        """Times, mode and owner (None: unchanged), stored as object metadata."""
        if mtime_ns is not None:
            self.mtime_ns = mtime_ns
            self._mtime_set = True
        if mode is not None:
            self.mode = mode
        if uid is not None:
            self.uid = uid
        if gid is not None:
            self.gid = gid
        self._metadata_dirty = True

    async def commit(self, store: ObjectStore, uploader: Uploader) -> Attrs | None:
        """Make the store hold what this file holds; None if nothing needed doing.

        On failure the staged data stays where it is (kept, and logged where, when the
        file is closed) and the error says why: EEXIST when someone else created the key
        first, ESTALE when someone else replaced the version we started from. The error
        is logged once, by the FUSE binding, with the operation that committed.
        """
        async with self._lock:
            if self.unlinked or not (self.dirty or self._metadata_dirty):
                return None
            metadata = self._metadata()
            try:
                with uploader.counted():
                    if self.dirty:
                        staged = await self._stage(store, fetch=False)
                        self.etag = await self._upload(uploader, staged, metadata)
                    else:  # only times or mode changed: replace the metadata server-side
                        self.etag = await uploader.copy(
                            self.key, self.key, self.size, self.etag, metadata, None
                        )
            except PreconditionFailed as exc:
                self.failure = self._lost_race(exc)
                raise self.failure from None
            except StoreError as exc:
                self.failure = exc
                raise
            self.failure = None
            self.dirty = self._metadata_dirty = self._mtime_set = False
            return self.attrs()

    async def _upload(
        self, uploader: Uploader, staged: StagedFile, metadata: dict[str, str]
    ) -> str:
        """Upload the staged content: complete the stream of its parts if one runs, else
        upload it whole. A stream's object has the metadata of when it began; what was
        changed since, but the times of writes, is then stored with a self-copy."""
        stream, self._stream = self._stream, None
        condition = WriteCondition(self.etag)
        if stream is None or staged.size <= stream.part_size or stream.too_small_for(staged.size):
            if stream is not None:
                stream.discard()
            return await uploader.upload(self.key, staged.fd, staged.size, condition, metadata)
        etag = await stream.finish(staged.size, condition)
        if stream.metadata != metadata and (
            self._mtime_set or _without_mtime(stream.metadata) != _without_mtime(metadata)
        ):
            etag = await uploader.copy(self.key, self.key, staged.size, etag, metadata, None)
        return etag

    def _metadata(self) -> dict[str, str]:
        """The object metadata of this file's times, mode and owner."""
        file_type = self.special or stat.S_IFREG
        return object_metadata(self.mtime_ns, self.mode, file_type, self.uid, self.gid)

    def _lost_race(self, exc: PreconditionFailed) -> FsError:
        if self.etag is None:
            return exc.retyped(Exists, "another writer created it first", key=self.key)
        reason = f"another writer replaced the version we opened (ETag {self.etag})"
        return exc.retyped(Stale, reason, key=self.key)

    def moved(self, path: str, key: str, etag: str | None) -> None:
        """The object was renamed while open: later commits go to the new key."""
        self.path, self.key, self.etag = path, key, etag
        self._drop_stream()
        if self.staged is not None:
            self.staged.describe(key, etag)

    def unfinished(self) -> str | None:
        """What is pending of this file if the mount is abandoned now; None if nothing."""
        if self.unlinked:
            return None
        if self._lock.locked():
            return "its upload was in flight: it may or may not be in the bucket"
        if self.dirty or self._metadata_dirty:
            return "not uploaded"
        return None

    async def abandon(self) -> bool:
        """The mount is going while this file is open: an open file is not complete, so
        nothing more is uploaded. What was uploaded leaves the cache directory; changed
        data stays there, with a log line naming the key, its size and where it is
        (`close`). True when a change was not uploaded."""
        lost = not self.unlinked and (self.dirty or self._metadata_dirty)
        reason = f"({self.size} bytes) was still open for writing at unmount: not uploaded"
        if lost and not (self.dirty and self.staged is not None):  # nothing staged to keep
            what = "its times/mode" if not self.dirty else "nothing written yet"
            log.error("%r %s (%s)", self.key, reason, what)
        await self.close(reason)
        return lost

    async def close(self, reason: str | None = None) -> None:
        """The last handle is gone: drop committed data, keep what could not be committed
        (logged with ``reason``, by default why its last upload failed)."""
        self._drop_stream()
        if self.staged is None:
            return
        if self.dirty and not self.unlinked:
            if reason is None:
                failure = self.failure
                why = f": {failure.code}: {failure.message}" if failure is not None else ""
                reason = f"was not uploaded{why}"
            await self.staged.keep(f"{self.key!r} {reason}", self._metadata())
        else:
            self.staged.discard()
        self.staged = None


def _without_mtime(metadata: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in metadata.items() if name != MTIME_KEY}
