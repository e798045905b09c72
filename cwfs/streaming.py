"""A staged file's multipart upload, its parts sent while the file is still written.

A checkpoint (``torch.save``, ``dd``) is one large file written from start to end and
then closed, while the job waits. Sending each part as soon as the writer has moved
past it leaves close() only the tail and the completion to wait for.

Rules:

- The staged file stays the truth. Part n is bytes [(n-1)P, nP) of it, P the part size
  fixed when the stream starts. The stream reads through its own duplicate of the
  staged file's descriptor, so a part in flight never reads another file's bytes.
- Each write and truncate bumps the version of every part it touches. A part goes out
  in the background the first time the file grows past its end, with the version it
  read; at most `--upload-concurrency` parts are in flight over the mount (the
  uploader's limiter). A background part that fails is simply not counted as sent.
- ``finish`` (close, fsync) waits for the parts in flight, sends every part 1..N (N the
  parts of the final size) not sent at its current version and length, then completes
  the upload under the file's condition, listing 1..N: S3 keeps the last upload of a
  part number and drops parts not listed. The upload is consumed: later writes start
  a new stream.
- What finish does not complete is aborted (a failure, a file that shrank to one part,
  ``discard`` when the file is unlinked or closed without upload); until then the
  upload is in the mount's ledger (`cwfs.kept`), so a killed mount's is aborted later.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from typing import TYPE_CHECKING, Any

import trio

from cwfs.errors import FsError
from cwfs.store import WriteCondition
from cwfs.tasks import gather

if TYPE_CHECKING:
    from cwfs.upload import Uploader

log = logging.getLogger(__name__)

MAX_PARTS = 10_000

Part = dict[str, Any]  # a part as CompleteMultipartUpload lists it: number, ETag, checksum


class PartStream:
    """The multipart upload of one staged file (see the module's rules)."""

    def __init__(
        self, uploader: Uploader, key: str, fd: int, part_size: int, metadata: dict[str, str]
    ) -> None:
        self._uploader = uploader
        self.key = key
        self._fd = os.dup(fd)
        self.part_size = part_size
        self.metadata = metadata  # what CreateMultipartUpload stored with the object
        self._upload_id: str | None = None
        self._creating = trio.Lock()
        self._versions: dict[int, int] = {}
        self._sent: dict[int, tuple[int, int, Part]] = {}  # part: version, length, part
        self._in_flight: dict[int, trio.Event] = {}
        self._next = 1  # the first part never sent in the background
        self._done = False  # finishing or discarded: no more background sends
        self._discarded = False

    def changed(self, start: int, end: int, size: int, send: bool = True) -> None:
        """Bytes ``start..end`` (exclusive) changed; the file now has ``size`` bytes.
        With ``send`` (a write, not a truncate), parts the file has grown past go out
        in the background."""
        size_part = size // self.part_size + 1
        last = min((max(end, start + 1) - 1) // self.part_size + 1, size_part)
        for number in range(start // self.part_size + 1, last + 1):
            self._versions[number] = self._versions.get(number, 0) + 1
        while send and not self._done and self._next * self.part_size < size:
            number, self._next = self._next, self._next + 1
            if number not in self._sent and number not in self._in_flight:
                self._in_flight[number] = trio.Event()
                if not self._uploader.spawn(self._send_in_background, number):
                    del self._in_flight[number]  # the mount is going: close sends it

    async def _send_in_background(self, number: int) -> None:
        try:
            await self._send(number, self.part_size)
        except (FsError, OSError) as exc:
            log.info("%r: part %d not sent yet (%s): it goes with the close", self.key, number, exc)
        finally:
            self._in_flight.pop(number).set()
            if self._discarded:
                self._close()

    async def _send(self, number: int, length: int) -> None:
        version = self._versions.get(number, 0)
        upload_id = await self._ensure_upload()
        offset = (number - 1) * self.part_size
        part = await self._uploader.send_part(self.key, upload_id, self._fd, number, offset, length)
        self._sent[number] = (version, length, part)

    async def _ensure_upload(self) -> str:
        async with self._creating:
            if self._upload_id is None:
                self._upload_id = await self._uploader.create(self.key, self.metadata)
            return self._upload_id

    async def finish(self, size: int, condition: WriteCondition) -> str:
        """Complete the upload with the file's ``size`` bytes under ``condition``; the
        new ETag. A failure aborts the upload and is raised."""
        self._done = True
        count = math.ceil(size / self.part_size)
        lengths = {
            n: min(self.part_size, size - (n - 1) * self.part_size) for n in range(1, count + 1)
        }
        try:
            await self._settle_in_flight()
            stale = [n for n, length in lengths.items() if not self._current(n, length)]
            sends = [functools.partial(self._send, n, lengths[n]) for n in stale]
            # Its own limiter, as wide as the uploader's, bounds the tasks: `send_part`
            # takes the uploader's, which a task cannot hold twice.
            width = self._uploader.limiter.total_tokens
            await gather(sends, limiter=trio.CapacityLimiter(width))
            upload_id = await self._ensure_upload()
            parts = [self._sent[n][2] for n in range(1, count + 1)]
            self._upload_id = None  # `Uploader.complete` completes it or aborts it
            return await self._uploader.complete(self.key, upload_id, parts, condition)
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._abort()
            raise
        finally:
            self._close()

    def too_small_for(self, size: int) -> bool:
        """Whether ``size`` bytes need more than S3's 10,000 parts of this size."""
        return math.ceil(size / self.part_size) > MAX_PARTS

    def _current(self, number: int, length: int) -> bool:
        sent = self._sent.get(number)
        return sent is not None and sent[:2] == (self._versions.get(number, 0), length)

    async def _settle_in_flight(self) -> None:
        for event in list(self._in_flight.values()):
            await event.wait()

    async def _abort(self) -> None:
        if self._upload_id is not None:
            await self._uploader.abort(self.key, self._upload_id)
            self._upload_id = None

    def discard(self) -> None:
        """Nothing of this upload is wanted (the file was unlinked, renamed, or is kept
        unsent): abort it once the parts in flight are done. A mount that is going
        leaves that to the next one (the ledger has the upload)."""
        self._done = self._discarded = True

        async def abort_later() -> None:
            await self._settle_in_flight()
            await self._abort()

        if self._upload_id is not None or self._in_flight:
            self._uploader.spawn(abort_later)
        if not self._in_flight:
            self._close()

    def _close(self) -> None:
        """Close the stream's descriptor, once no part in flight reads it."""
        if self._fd >= 0 and not self._in_flight:
            os.close(self._fd)
            self._fd = -1
