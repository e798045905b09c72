"""Local staging files for data being written, under one byte budget.

Files open for writing live in the cache directory until their object is committed.
The budget counts the bytes of all staged files of the mount together (of every
bucket's cache directory, with ``--all-buckets``): a writer that would go over it
waits until other files are committed and discarded, rather than filling the disk.
A file alone is always allowed to grow, so a single large file cannot deadlock.
Files whose upload failed are kept (their path is logged) and leave the budget. Each
staged file has a record beside it, so that kept data can be found and recovered
(`cwfs.kept`).
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import tempfile
from dataclasses import replace
from pathlib import Path

import trio

from cwfs.kept import RECORD_SUFFIX, UPLOAD_SUFFIX, Record, default_cache_base, record_path

log = logging.getLogger(__name__)


def create_cache_dir(configured: Path | None, bucket: str) -> tuple[Path, bool]:
    """The directory to stage in, and whether it is a private one of this mount's own."""
    if configured is not None:
        configured.mkdir(mode=0o700, parents=True, exist_ok=True)
        return configured, False
    base = default_cache_base()
    base.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{bucket}-", dir=base)), True


class StagedFile:
    """One local file holding an object's new content; its size is charged to the budget."""

    def __init__(self, area: StagingArea, path: Path, record: Record) -> None:
        self._area = area
        self._budget = area.budget
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        self.size = 0
        self._record = record
        try:
            record.write(path)
        except OSError:
            self.discard()
            raise

    def describe(self, key: str, base_etag: str | None) -> None:
        """The data now goes to ``key``, replacing ``base_etag``: its record says so."""
        if (key, base_etag) != (self._record.key, self._record.base_etag):
            self._record = replace(self._record, key=key, base_etag=base_etag)
            self._record.write(self.path)

    async def resize(self, size: int) -> None:
        """Grow or shrink the file to ``size`` bytes, waiting for budget to grow."""
        await self._budget.charge(self.size, size - self.size)
        try:
            os.ftruncate(self.fd, size)
        except OSError:
            self._budget.force_charge(self.size - size)
            raise
        self.size = size

    async def write(self, offset: int, data: bytes) -> int:
        """Write ``data`` at ``offset``; a full disk (ENOSPC) fails this write and no other.

        What a short or failed write did not add is given back to the budget.
        """
        growth = max(0, offset + len(data) - self.size)
        await self._budget.charge(self.size, growth)
        try:
            written = os.pwrite(self.fd, data, offset)
        except OSError:
            self._budget.force_charge(-growth)
            raise
        size = max(self.size, offset + written)
        self._budget.force_charge(size - self.size - growth)
        self.size = size
        return written

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def adopt_download(self) -> None:
        """Account for content written to ``path`` behind our back (a download)."""
        size = os.fstat(self.fd).st_size
        self._budget.force_charge(size - self.size)
        self.size = size

    def discard(self) -> None:
        """Delete the file and its record and give its bytes back to the budget."""
        self._close()
        self.path.unlink(missing_ok=True)
        record_path(self.path).unlink(missing_ok=True)

    async def keep(self, reason: str, metadata: dict[str, str]) -> Path:
        """Leave the file on disk (its data could not be committed), complete its record
        for `cwfs recover`, and log where it is. The record's CRC32C is computed in a
        worker thread: a kept checkpoint can be many GiB, and the mount keeps answering."""
        self._area.kept += 1
        self._area.kept_bytes += self.size
        self._close()
        log.error("%s: the data is kept in %s", reason, self.path)
        record = replace(self._record, metadata=metadata)
        with trio.CancelScope(shield=True):  # called when closing, cancelled or not
            await trio.to_thread.run_sync(self._complete_record, record, reason)
        return self.path

    def _complete_record(self, record: Record, reason: str) -> None:
        try:
            record.kept(self.path, reason).write(self.path)
        except OSError as exc:
            log.error("could not complete the record of %s: %s", self.path, exc)

    def _close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            self._budget.force_charge(-self.size)


class StagingBudget:
    """The bytes staged by a mount, against ``--cache-limit``."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._freed = trio.Event()

    async def charge(self, size: int, delta: int) -> None:
        """Add ``delta`` bytes for a file of ``size`` bytes, first waiting while other
        files fill the budget."""
        while delta > 0 and self.used + delta > self.limit and self.used > size:
            log.info(
                "staging is at its limit (%d of %d bytes): waiting for uploads",
                self.used,
                self.limit,
            )
            await self._freed.wait()
        self.force_charge(delta)

    def force_charge(self, delta: int) -> None:
        """Add ``delta`` bytes without waiting; a release wakes every waiting writer."""
        self.used += delta
        if delta < 0:
            self._freed.set()
            self._freed = trio.Event()


class StagingArea:
    """A cache directory, staging under the mount's byte budget."""

    def __init__(self, directory: Path, budget: StagingBudget, record: Record) -> None:
        """``record`` is what every staged file's record starts from: bucket, endpoint
        and mount."""
        self.directory = directory
        self.budget = budget
        self._record = record
        self.kept = self.kept_bytes = 0  # files (and their bytes) this mount could not upload
        self._names = itertools.count(1)

    def new_file(self, key: str, base_etag: str | None) -> StagedFile:
        """A fresh, empty staging file named after ``key`` (for whoever finds it later),
        to replace ``base_etag`` (None: to create the key).

        Names already taken, by data an earlier mount kept here, are skipped.
        """
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", key)[-100:]
        if safe.endswith((RECORD_SUFFIX, UPLOAD_SUFFIX)):
            safe += "_"  # never taken for a record
        record = replace(self._record, key=key, base_etag=base_etag)
        while True:
            try:
                path = self.directory / f"{next(self._names):06d}-{safe}"
                return StagedFile(self, path, record)
            except FileExistsError:
                continue
