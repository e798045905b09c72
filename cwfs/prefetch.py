"""Read-ahead for one open file: parallel ranged GETs ahead of a sequential reader.

A reader that keeps reading where it left off gets a window of bytes fetched ahead of
it, in segments fetched concurrently. The window starts at one small segment, so the
first byte costs one short request, and doubles each time a segment is consumed, up
to ``max_window`` and the reader's share of the mount's memory budget; segments grow
to ``part_size`` (large requests are what LOTA serves best). The kernel's own
read-ahead reaches us as concurrent reads in any order, so reads near the stream
still belong to it. A read elsewhere cancels what is in flight and is served by one
ranged GET of just what was asked; read-ahead starts again after two contiguous
reads. Objects no larger than one part are fetched whole at the first read. A read
waits only for the bytes it asks for, not for the rest of their segment. Every GET
carries the ETag seen at open.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from cwfs.errors import FsError, PreconditionFailed, Stale, StoreError
from cwfs.memory import MemoryBudget

FIRST_SEGMENT = 1 << 20
PAGE = 4096
# The mount's kernel read-ahead (mount.py sets it): the kernel asks for up to this much
# at once, in concurrent reads of 1 MiB, and may have two such batches in flight; they
# reach us in any order. Reads that close to the last one belong to the same stream.
KERNEL_READ_AHEAD = 2 << 20
STREAM_SLACK = 2 * KERNEL_READ_AHEAD


class RangeSource(Protocol):
    """Where data comes from: the store, or the LOTA endpoint in front of it."""

    async def get_range(
        self,
        key: str,
        start: int,
        end: int,
        etag: str | None,
        on_chunk: Callable[[int, bytes], bool] | None = None,
    ) -> list[bytes]: ...


@dataclass
class Segment:
    """Bytes [start, end) of the object, being fetched or fetched."""

    start: int
    end: int
    done: trio.Event = field(default_factory=trio.Event)
    chunks: list[bytes | memoryview] = field(default_factory=list)
    received: int = 0  # bytes in chunks, from start on
    arrival: trio.Event = field(default_factory=trio.Event)  # set when more has come
    error: BaseException | None = None
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)
    wanted: bool = True  # False once discarded; read from the worker thread, unlike `cancel`
    passed: bool = False  # the reader has gone past its end

    @property
    def size(self) -> int:
        return self.end - self.start

    def arrived(self, position: int, chunk: bytes) -> None:
        """Bytes from ``position`` on came in: kept if they extend what is here (what an
        earlier attempt delivered is skipped; nothing can leave a gap)."""
        have = self.start + self.received
        if position <= have < position + len(chunk):
            self.chunks.append(chunk if position == have else memoryview(chunk)[have - position :])
            self.received = position + len(chunk) - self.start
            self._wake()

    def finished(self) -> None:
        self.done.set()
        self._wake()

    def _wake(self) -> None:
        self.arrival.set()
        self.arrival = trio.Event()

    async def wait_for(self, position: int) -> bool:
        """Wait until the bytes before ``position`` are here (True) or the fetch ended without them."""
        while self.start + self.received < position:
            if self.done.is_set():
                return False
            await self.arrival.wait()
        return True

    def views(self, first: int, last: int) -> list[memoryview]:
        """Views of bytes [first, last) of the object, from this segment's chunks."""
        views, position = [], self.start
        for chunk in self.chunks:
            if position + len(chunk) > first and position < last:
                views.append(memoryview(chunk)[max(first - position, 0) : last - position])
            position += len(chunk)
        return views


@dataclass
class ReadCounts:
    """The read-ahead of every open file, together: bytes fetched against bytes the
    kernel was given (``cwfs stats``); fetched but never read is the waste."""

    fetched: int = 0
    delivered: int = 0


class Prefetcher:
    def __init__(
        self,
        source: RangeSource,
        key: str,
        size: int,
        etag: str | None,
        budget: MemoryBudget,
        nursery: trio.Nursery,
        part_size: int,
        max_window: int,
        counts: ReadCounts | None = None,
    ) -> None:
        self._source = source
        self._counts = counts if counts is not None else ReadCounts()
        self._key = key
        self._size = size
        self._etag = etag
        self._budget = budget
        self._nursery = nursery
        self._part_size = part_size
        self._max_window = max(max_window, FIRST_SEGMENT)
        self._segments: list[Segment] = []  # contiguous, in order, from just behind the reader on
        self._next = 0  # where a sequential reader reads next
        self._tail: tuple[int, bytes] = (0, b"")  # bytes fetched just past the last demand read
        self._window = FIRST_SEGMENT
        self._sequential = False
        self._jumped = False  # the last read was not near the one before it
        self._closed = False
        self._lock = trio.Lock()  # kernel reads of one handle may arrive concurrently

    async def read(self, offset: int, size: int) -> bytes | memoryview:
        """Bytes ``offset..offset+size`` of the object (fewer at its end).

        A read inside one fetched chunk is answered with a view of it, not a copy:
        pyfuse3 hands any buffer to the kernel as it is.
        """
        if size <= 0 or offset >= self._size:
            return b""
        data = await self._read(offset, min(offset + size, self._size))
        self._counts.delivered += len(data)
        return data

    async def _read(self, offset: int, end: int) -> bytes | memoryview:
        async with self._lock:
            tail_start, tail = self._tail
            if tail_start <= offset and end <= tail_start + len(tail):
                self._next = end
                return memoryview(tail)[offset - tail_start : end - tail_start]
            if self._size <= self._part_size:
                if not self._segments:
                    self._start(0, self._size)
            elif self._in_stream(offset):
                if self._sequential or not self._jumped:
                    self._read_ahead(offset)
                self._jumped = False  # right after a jump, one more read before read-ahead
            else:
                self._reset()
                self._jumped = True
            self._next = end
            if self._covers(offset) and self._covers(end - 1):
                return await self._from_segments(offset, end)
        return await self._fetch_now(offset, end)

    def moved(self, key: str) -> None:
        """The object was renamed (same version, same ETag): read it under its new key."""
        self._key = key

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            self._reset()

    # -- segments ------------------------------------------------------------------

    def _in_stream(self, offset: int) -> bool:
        """Whether a read at ``offset`` continues the reader's stream rather than jumping."""
        if self._covers(offset) or offset == self._next:
            return True
        return self._sequential and abs(offset - self._next) <= STREAM_SLACK

    def _read_ahead(self, offset: int) -> None:
        """The reader is streaming: keep the window ahead of ``offset`` fetched.

        Each segment the reader passes doubles the window; a segment stays until the
        reader is `STREAM_SLACK` past it, for the kernel's reads that arrive late.
        """
        if not self._sequential:
            self._sequential = True
            self._budget.readers += 1
        for segment in self._segments:
            if segment.end <= offset and not segment.passed:
                segment.passed = True
                self._window = min(self._window * 2, self._max_window)
        while self._segments and self._segments[0].end <= offset - STREAM_SLACK:
            self._discard(self._segments.pop(0))
        self._fill(offset)

    def _covers(self, position: int) -> bool:
        return bool(self._segments) and self._segments[0].start <= position < self._segments[-1].end

    def _reset(self) -> None:
        """A jump: cancel read-ahead, shrink the window, leave the sequential readers."""
        for segment in self._segments:
            self._discard(segment)
        self._segments.clear()
        self._window = FIRST_SEGMENT
        if self._sequential:
            self._sequential = False
            self._budget.readers -= 1

    def _discard(self, segment: Segment) -> None:
        segment.wanted = False
        segment.cancel.cancel()
        if segment.done.is_set():
            self._budget.give(segment.size)

    def _fill(self, offset: int) -> None:
        """Start segments until the window ahead of ``offset`` is covered (or memory is short)."""
        window = max(FIRST_SEGMENT, min(self._window, self._max_window, self._budget.share()))
        start = self._segments[-1].end if self._segments else offset
        while start < min(self._size, offset + window):
            if not self._start(start, min(start + self._part_size, start + window, self._size)):
                return
            start = self._segments[-1].end

    def _start(self, start: int, end: int) -> bool:
        """Fetch [start, end) in the background, if the budget has room for it."""
        if self._closed or not self._budget.try_take(end - start):
            return False
        segment = Segment(start, end)
        self._segments.append(segment)
        self._nursery.start_soon(self._fetch, segment)
        return True

    async def _fetch(self, segment: Segment) -> None:
        token = trio.lowlevel.current_trio_token()

        def on_chunk(position: int, chunk: bytes) -> bool:  # in the worker thread
            if segment.wanted:
                token.run_sync_soon(segment.arrived, position, chunk)
            return segment.wanted  # discarded (a seek, or the file closed): stop the GET

        with segment.cancel:
            try:
                position = segment.start
                for chunk in await self._get(segment.start, segment.end, on_chunk):
                    segment.arrived(
                        position, chunk
                    )  # whatever on_chunk's callbacks have not brought yet
                    position += len(chunk)
            except FsError as exc:
                segment.error = exc
            finally:
                if segment.cancel.cancel_called:
                    self._budget.give(segment.size)  # discarded while in flight
                segment.finished()
                self._counts.fetched += segment.received

    async def _from_segments(self, offset: int, end: int) -> bytes | memoryview:
        pieces = []
        for segment in list(self._segments):
            if segment.end <= offset or segment.start >= end:
                continue
            if not await segment.wait_for(min(end, segment.end)):
                error = segment.error or StoreError(
                    "read-ahead ended early", op="GetObject", key=self._key, code="IncompleteBody"
                )
                self._reset()
                raise error
            pieces.extend(segment.views(max(offset, segment.start), min(end, segment.end)))
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def _fetch_now(self, offset: int, end: int) -> bytes | memoryview:
        """A demand read outside the read-ahead: what was asked, one GET.

        A read that does not end on a page boundary comes from direct I/O, where the
        kernel splits a read into a buffer not aligned to a page at the buffer's page
        boundaries: 1 MiB minus a few bytes, then those few bytes at once. The GET
        takes one page more, kept for that second part.
        """
        stop = min(end + PAGE, self._size) if end % PAGE else end
        data = b"".join(await self._get(offset, stop))
        self._counts.fetched += len(data)
        if stop > end:
            self._tail = (end, data[end - offset :])
            return memoryview(data)[: end - offset]
        return data

    async def _get(
        self, start: int, end: int, on_chunk: Callable[[int, bytes], bool] | None = None
    ) -> list[bytes]:
        try:
            return await self._source.get_range(self._key, start, end - 1, self._etag, on_chunk)
        except PreconditionFailed as exc:
            why = f"changed in the store while open for reading (ETag was {self._etag}): reopen it"
            raise exc.retyped(Stale, why) from None
