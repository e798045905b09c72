"""Pure logic of the read side: subtree listings, the memory budget, the prefetcher."""

from __future__ import annotations

import errno

import trio

from cwfs.attrs import DIRECTORY, Attrs
from cwfs.errors import FsError, PreconditionFailed
from cwfs.listing import SubtreeListing
from cwfs.memory import MemoryBudget
from cwfs.prefetch import FIRST_SEGMENT, Prefetcher, Segment
from cwfs.store import FIRST_READ_CHUNK, READ_CHUNK, ObjectInfo, _chunk_size

MiB = 1 << 20


def info(key: str, size: int = 1) -> ObjectInfo:
    return ObjectInfo(key, size, 0.0, '"e"')


def subtree(keys: list[str]) -> SubtreeListing:
    tree = SubtreeListing(
        "p/", lambda key, name: name not in ("", ".", ".."), lambda i: Attrs(False, i.size)
    )
    tree.add(info(k) for k in keys)
    return tree


def test_subtree_listing_builds_every_directory():
    tree = subtree(["p/", "p/a", "p/d/", "p/d/x", "p/d/e/y", "p/f"])
    assert set(tree.dirs) == {"", "d", "d/e"}
    assert tree.dirs[""] == {"a": Attrs(False, 1), "d": DIRECTORY, "f": Attrs(False, 1)}
    assert set(tree.dirs["d"]) == {"x", "e"} and set(tree.dirs["d/e"]) == {"y"}


def test_subtree_listing_hides_files_behind_directories_and_skips_bad_names():
    tree = subtree(["p/a", "p/a/b", "p/x//y", "p/z/../w"])
    assert tree.dirs[""] == {"a": DIRECTORY}
    assert tree.hidden == ["p/a"]


def test_subtree_listing_knows_which_directories_it_saw_whole():
    tree = subtree(["p/a/1", "p/a/2", "p/b/1"])
    assert list(tree.complete_dirs()) == ["a"]  # "b" may continue after the last key


class FakeStore:
    def __init__(self, body: bytes, fail_after: int | None = None) -> None:
        self.body, self.calls, self.fail_after = body, [], fail_after

    async def get_range(
        self, key: str, start: int, end: int, etag: str | None, on_chunk=None
    ) -> list[bytes]:
        self.calls.append((start, end))
        await trio.sleep(0)
        if self.fail_after is not None and len(self.calls) > self.fail_after:
            raise PreconditionFailed("changed", op="GetObject", key=key, code="PreconditionFailed")
        data = self.body[start : end + 1]
        chunks = [data[i : i + MiB] for i in range(0, len(data), MiB)]
        for i, chunk in enumerate(chunks):
            if on_chunk is not None:
                on_chunk(start + i * MiB, chunk)
            await trio.sleep(0)  # chunks come one at a time
        return chunks


def run_prefetch(
    body: bytes,
    reads: list[tuple[int, int]],
    budget: int = 64 * MiB,
    part: int = 4 * MiB,
    fail_after=None,
):
    store, memory = FakeStore(body, fail_after), MemoryBudget(budget)
    results = []

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            reader = Prefetcher(store, "k", len(body), '"e"', memory, nursery, part, 32 * MiB)
            try:
                for offset, size in reads:
                    results.append(await reader.read(offset, size))
            except FsError as exc:
                results.append(exc)
            await reader.close()

    trio.run(main)
    return results, store.calls, memory


def test_sequential_reads_grow_the_window_up_to_the_part_size():
    body = bytes(range(256)) * (64 * MiB // 256)
    reads = [(o, MiB) for o in range(0, len(body), MiB)]
    results, calls, memory = run_prefetch(body, reads)
    assert b"".join(results) == body
    assert any(isinstance(r, memoryview) for r in results)  # reads inside one chunk are not copied
    sizes = [end - start + 1 for start, end in sorted(calls)]
    assert sizes[0] == FIRST_SEGMENT and max(sizes) == 4 * MiB and sizes.count(4 * MiB) >= 10
    assert sum(sizes) == len(body)  # nothing fetched twice
    assert memory.used == 0 and 0 < memory.peak <= 64 * MiB


def test_a_jump_cancels_read_ahead_and_reads_just_what_was_asked():
    body = bytes(64 * MiB)
    _, calls, memory = run_prefetch(body, [(0, MiB), (40 * MiB, 4096)])
    assert (40 * MiB, 40 * MiB + 4095) in calls
    assert memory.used == 0


def test_a_direct_io_read_split_at_its_buffer_pages_costs_one_get():
    """An unaligned buffer: the kernel asks for 1 MiB less 1,040 bytes, then for the 1,040."""
    body = bytes(range(256)) * (64 * MiB // 256)
    first = (40 * MiB + 100, MiB - 1040)
    second = (first[0] + first[1], 1040)
    results, calls, memory = run_prefetch(body, [first, second])
    assert [bytes(r) for r in results] == [body[o : o + n] for o, n in (first, second)]
    assert calls == [(first[0], first[0] + first[1] + 4096 - 1)]
    assert memory.used == 0


def test_reads_arriving_out_of_order_keep_the_stream():
    """Once reading is under way, the kernel's read-ahead comes as concurrent 1 MiB
    reads, in any order."""
    body = bytes(range(256)) * (64 * MiB // 256)
    swapped = [
        o
        for pair in zip(
            range(2 * MiB, 64 * MiB, 2 * MiB), range(MiB, 64 * MiB, 2 * MiB), strict=False
        )
        for o in pair
    ]
    offsets = [0, *swapped, 63 * MiB]
    results, calls, memory = run_prefetch(body, [(o, MiB) for o in offsets])
    assert [bytes(r) for r in results] == [body[o : o + MiB] for o in offsets]
    assert sum(end - start + 1 for start, end in calls) == len(body), "each byte fetched once"
    assert max(end - start + 1 for start, end in calls) == 4 * MiB  # the window grew
    assert memory.used == 0


def test_the_read_after_a_jump_is_fetched_alone():
    """A 1 MiB pread not aligned to pages is two kernel reads: the second must not start
    read-ahead, or every random read fetches twice what it asked."""
    body = bytes(64 * MiB)
    _, calls, _ = run_prefetch(body, [(40 * MiB, MiB), (41 * MiB, 4096)])
    assert calls == [(40 * MiB, 41 * MiB - 1), (41 * MiB, 41 * MiB + 4095)]


def test_the_budget_limits_read_ahead():
    body = bytes(64 * MiB)
    reads = [(o, MiB) for o in range(0, len(body), MiB)]
    _, _, memory = run_prefetch(body, reads, budget=8 * MiB)
    assert memory.peak <= 8 * MiB


def test_a_replaced_object_fails_the_read_with_estale():
    results, _, memory = run_prefetch(
        bytes(64 * MiB), [(o, MiB) for o in range(0, 64 * MiB, MiB)], fail_after=3
    )
    assert isinstance(results[-1], FsError) and results[-1].errno == errno.ESTALE
    assert not any(isinstance(r, FsError) for r in results[:-1])
    assert memory.used == 0


def test_a_read_waits_only_for_the_bytes_it_asks_for():
    body = bytes(range(256)) * (8 * MiB // 256)
    rest = trio.Event()

    class FirstChunkThenStall:
        async def get_range(self, key, start, end, etag, on_chunk=None):
            data = body[start : end + 1]
            on_chunk(start, data[:MiB])
            await rest.wait()
            chunks = [data[i : i + MiB] for i in range(0, len(data), MiB)]
            for i, chunk in enumerate(chunks[1:], 1):
                on_chunk(start + i * MiB, chunk)
            return chunks

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            reader = Prefetcher(
                FirstChunkThenStall(),
                "k",
                len(body),
                '"e"',
                MemoryBudget(64 * MiB),
                nursery,
                16 * MiB,
                32 * MiB,
            )
            with trio.fail_after(
                5
            ):  # the object (one part) is fetched whole, but the first MiB is enough
                assert bytes(await reader.read(0, 4096)) == body[:4096]
            rest.set()
            assert bytes(await reader.read(4096, 2 * MiB)) == body[4096 : 4096 + 2 * MiB]
            await reader.close()

    trio.run(main)


def test_a_segment_keeps_each_byte_once_when_a_retry_delivers_it_again():
    async def main() -> None:
        segment = Segment(0, 3 * MiB)
        a, b = b"a" * MiB, b"b" * MiB
        segment.arrived(0, a)
        segment.arrived(0, a)  # a retry (or the fallback endpoint) starts over
        segment.arrived(MiB // 2, a[: MiB // 2] + b[: MiB // 2])  # overlaps what is here
        segment.arrived(2 * MiB, b"c" * MiB)  # out of order: would leave a gap
        segment.arrived(MiB, b)
        assert segment.received == 2 * MiB
        assert b"".join(segment.views(0, 2 * MiB)) == a + b

    trio.run(main)


def test_body_chunks_end_on_read_chunk_boundaries_after_a_short_first_one():
    def chunks(start: int, end: int) -> list[tuple[int, int]]:
        out, position = [], start
        while position < end:
            size = min(_chunk_size(position, position == start), end - position)
            out.append((position, size))
            position += size
        return out

    first, second, *rest = chunks(3 * READ_CHUNK, 6 * READ_CHUNK)
    assert first == (3 * READ_CHUNK, FIRST_READ_CHUNK)
    assert second == (3 * READ_CHUNK + FIRST_READ_CHUNK, READ_CHUNK - FIRST_READ_CHUNK)
    assert rest == [(4 * READ_CHUNK, READ_CHUNK), (5 * READ_CHUNK, READ_CHUNK)]
    unaligned = chunks(READ_CHUNK + 100, 3 * READ_CHUNK)
    assert unaligned[0] == (READ_CHUNK + 100, FIRST_READ_CHUNK)
    assert [p % READ_CHUNK for p, _ in unaligned[2:]] == [0]
