"""`PartStream`'s rules with a recording uploader, in process: which parts go when, and
what is sent again. Through a mount: tests/test_checkpoint.py."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio
import trio.testing

from cwfs.store import WriteCondition
from cwfs.streaming import PartStream

P = 8  # bytes per part, for the logic's sake


class Recorder:
    """What a stream asks of its uploader, recorded; parts hold the bytes they read."""

    def __init__(self, nursery: trio.Nursery | None) -> None:
        self.nursery = nursery
        self.limiter = trio.CapacityLimiter(2)
        self.sent: list[tuple[int, bytes]] = []
        self.completed: list[list[bytes]] = []
        self.aborted: list[str] = []

    def spawn(self, function: Callable[..., Awaitable[None]], *args: Any) -> bool:
        if self.nursery is None:
            return False
        self.nursery.start_soon(function, *args)
        return True

    async def create(self, key: str, metadata: dict[str, str]) -> str:
        return "up-1"

    async def send_part(
        self, key: str, upload_id: str, fd: int, number: int, offset: int, length: int
    ) -> dict[str, Any]:
        await trio.sleep(1)
        data = os.pread(fd, length, offset)
        self.sent.append((number, data))
        return {"PartNumber": number, "Body": data}

    async def complete(
        self, key: str, upload_id: str, parts: list[Any], condition: WriteCondition
    ) -> str:
        self.completed.append([entry["Body"] for entry in parts])
        return '"etag-2"'

    async def abort(self, key: str, upload_id: str) -> bool:
        self.aborted.append(upload_id)
        return False


def run(test: Callable[[Recorder, int], Awaitable[None]], tmp_path: Path) -> None:
    fd = os.open(tmp_path / "staged", os.O_RDWR | os.O_CREAT, 0o600)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await test(Recorder(nursery), fd)
            nursery.cancel_scope.cancel()

    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        os.close(fd)


def write(fd: int, stream: PartStream, offset: int, data: bytes) -> None:
    os.pwrite(fd, data, offset)
    stream.changed(offset, offset + len(data), os.fstat(fd).st_size)


def test_full_parts_go_once_the_file_grows_past_them(tmp_path):
    async def test(uploader: Recorder, fd: int) -> None:
        stream = PartStream(uploader, "k", fd, P, {})  # type: ignore[arg-type]
        write(fd, stream, 0, b"a" * P)
        await trio.sleep(5)
        assert uploader.sent == []  # part 1 is full, but the writer may go on in it
        write(fd, stream, P, b"b" * (P + 3))
        await trio.sleep(5)
        assert sorted(uploader.sent) == [(1, b"a" * P), (2, b"b" * P)]
        assert await stream.finish(2 * P + 3, WriteCondition(None)) == '"etag-2"'
        assert uploader.sent[2:] == [(3, b"bbb")]  # the tail, at close
        assert uploader.completed == [[b"a" * P, b"b" * P, b"bbb"]]

    run(test, tmp_path)


def test_a_part_written_again_or_cut_by_a_truncate_is_sent_again(tmp_path):
    async def test(uploader: Recorder, fd: int) -> None:
        stream = PartStream(uploader, "k", fd, P, {})  # type: ignore[arg-type]
        write(fd, stream, 0, b"x" * (3 * P + 1))
        await trio.sleep(5)
        assert sorted(n for n, _ in uploader.sent) == [1, 2, 3]
        write(fd, stream, 2, b"Y")  # into part 1, sent already
        os.ftruncate(fd, P + 2)  # part 2 is now the 2-byte tail; part 3 is gone
        stream.changed(P + 2, 3 * P + 1, P + 2, send=False)
        await stream.finish(P + 2, WriteCondition(None))
        assert sorted(uploader.sent[3:]) == [(1, b"xxYxxxxx"), (2, b"xx")]
        assert uploader.completed == [[b"xxYxxxxx", b"xx"]]

    run(test, tmp_path)


def test_a_discarded_stream_aborts_its_upload_after_the_parts_in_flight(tmp_path):
    async def test(uploader: Recorder, fd: int) -> None:
        stream = PartStream(uploader, "k", fd, P, {})  # type: ignore[arg-type]
        write(fd, stream, 0, b"z" * (2 * P))
        await trio.sleep(0.5)  # part 1 in flight
        stream.discard()
        await trio.sleep(5)
        assert (uploader.sent, uploader.aborted) == ([(1, b"z" * P)], ["up-1"])
        write(fd, stream, 2 * P, b"more")  # nothing more goes out
        await trio.sleep(5)
        assert len(uploader.sent) == 1

    run(test, tmp_path)


def test_a_mount_that_is_going_sends_nothing_in_the_background_and_close_still_works(tmp_path):
    async def test(uploader: Recorder, fd: int) -> None:
        uploader.nursery = None  # spawning refused, as once the mount's nursery is closed
        stream = PartStream(uploader, "k", fd, P, {})  # type: ignore[arg-type]
        write(fd, stream, 0, b"q" * (2 * P + 1))
        with trio.fail_after(60):
            await stream.finish(2 * P + 1, WriteCondition(None))
        assert sorted(n for n, _ in uploader.sent) == [1, 2, 3]

    run(test, tmp_path)
