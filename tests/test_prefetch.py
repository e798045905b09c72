"""Read-ahead through a real mount: request sizes, endpoints, fallback, memory budget."""

from __future__ import annotations

import hashlib
import itertools
import mmap
import os
import random
import re
import threading

import pytest
from conftest import cwfs_env, memory_kib

from cwfs.server.seed import pattern

MiB = 1 << 20


def ranges(requests, endpoint=None):
    """(first, last) of every GetObject, in order."""
    out = []
    for r in requests:
        if r["op"] == "GetObject" and (endpoint is None or r["endpoint"] == endpoint):
            first, last = re.fullmatch(r"bytes=(\d+)-(\d+)", r["headers"]["Range"]).groups()
            out.append((int(first), int(last)))
    return out


def read_all(path, chunk=MiB) -> bytes:
    with open(path, "rb") as f:
        return b"".join(iter(lambda: f.read(chunk), b""))


def lota_args(server):
    return ("--lota-endpoint", server.lota_url, "--lota", "auto")


def test_sequential_read_goes_to_lota_in_large_ranges(server, bucket, mount):
    size = 64 * MiB
    server.seed(bucket, [{"key": "seq.bin", "size": size}])
    mnt = mount(bucket, *lota_args(server), "--read-part-size", "16M").path
    os.stat(mnt / "seq.bin")
    server.reset()
    assert read_all(mnt / "seq.bin") == pattern("seq.bin", size)
    counts = server.all_counts()
    assert counts["primary"].get("GetObject", 0) == 0, counts
    gets = [r for r in server.requests() if r["op"] == "GetObject"]
    assert all(r["endpoint"] == "lota" and r["headers"].get("If-Match") for r in gets)
    spans = sorted(ranges(gets))
    sizes = [last - first + 1 for first, last in spans]
    assert sizes[0] == MiB, "the first request is small: time to first byte is one short GET"
    assert max(sizes) == 16 * MiB and sum(s for s in sizes if s == 16 * MiB) >= size // 2, sizes
    assert sum(sizes) == size and all(a[1] + 1 == b[0] for a, b in itertools.pairwise(spans)), (
        "each byte fetched once"
    )


def test_random_reads_fetch_small_ranges(server, bucket, mount):
    size = 64 * MiB
    server.seed(bucket, [{"key": "rand.bin", "size": size}])
    body = pattern("rand.bin", size)
    mnt = mount(bucket, "--read-part-size", "16M").path
    os.stat(mnt / "rand.bin")
    server.reset()
    rng = random.Random(7)
    with open(mnt / "rand.bin", "rb", buffering=0) as f:
        for _ in range(20):
            offset = rng.randrange(0, size - 4096)
            f.seek(offset)
            assert f.read(4096) == body[offset : offset + 4096]
    sizes = [last - first + 1 for first, last in ranges(server.requests())]
    assert sizes and max(sizes) <= 2 * MiB, sizes
    assert sum(sizes) < size // 4, "random reads must not drag in read-ahead"


def test_random_1_mib_reads_fetch_what_was_asked(server, bucket, mount):
    """With the kernel's read-ahead at 2 MiB, a 1 MiB pread is a "small random read" to
    the kernel: it asks for just its pages (two FUSE reads when not page-aligned), and
    the second starts no read-ahead of ours."""
    if os.geteuid() != 0:
        pytest.skip("only root can set the mount's kernel read-ahead")
    size = 64 * MiB
    server.seed(bucket, [{"key": "rand.bin", "size": size}])
    body = pattern("rand.bin", size)
    mnt = mount(bucket).path
    os.stat(mnt / "rand.bin")
    server.reset()
    rng = random.Random(5)
    offsets = [rng.randrange(0, size - MiB) for _ in range(8)]
    fd = os.open(mnt / "rand.bin", os.O_RDONLY)
    try:
        for offset in offsets:
            assert os.pread(fd, MiB, offset) == body[offset : offset + MiB]
    finally:
        os.close(fd)
    sizes = [last - first + 1 for first, last in ranges(server.requests())]
    assert len(sizes) <= 2 * len(offsets) and sum(sizes) <= len(offsets) * (MiB + 8192), sizes


def test_a_direct_io_read_into_an_unaligned_buffer_is_one_get(server, bucket, mount):
    """The kernel splits such a read at the buffer's page boundaries: 1 MiB less 1,040
    bytes, then 1,040 bytes. The first GET takes a page more, which serves the second."""
    size = 64 * MiB
    server.seed(bucket, [{"key": "rand.bin", "size": size}])
    body = pattern("rand.bin", size)
    mnt = mount(bucket, "--direct-io").path
    os.stat(mnt / "rand.bin")
    server.reset()
    rng = random.Random(11)
    offsets = [rng.randrange(0, size - MiB) for _ in range(5)]
    pages = mmap.mmap(-1, 2 * MiB)
    buffer = memoryview(pages)[1040 : 1040 + MiB]
    fd = os.open(mnt / "rand.bin", os.O_RDONLY)
    try:
        for offset in offsets:
            assert os.preadv(fd, [buffer], offset) == MiB
            assert buffer == body[offset : offset + MiB]
    finally:
        os.close(fd)
        buffer.release()
        pages.close()
    fetched = ranges(server.requests())
    assert [first for first, _ in fetched] == offsets, fetched
    assert all(last - first + 1 <= MiB + 4096 for first, last in fetched), fetched


def test_small_object_is_fetched_whole_at_first_read(server, bucket, mount):
    server.seed(bucket, [{"key": "small.bin", "size": 3 * MiB}])
    mnt = mount(bucket, "--read-part-size", "16M").path
    os.stat(mnt / "small.bin")
    server.reset()
    body = pattern("small.bin", 3 * MiB)
    with open(mnt / "small.bin", "rb", buffering=0) as f:
        f.seek(2 * MiB)
        assert f.read(4096) == body[2 * MiB : 2 * MiB + 4096]
        f.seek(0)
        assert f.read(4096) == body[:4096]
    assert ranges(server.requests()) == [(0, 3 * MiB - 1)]


def test_failing_lota_falls_back_to_the_primary_endpoint(server, bucket, mount):
    server.seed(bucket, [{"key": "fb.bin", "size": 4 * MiB}])
    m = mount(bucket, *lota_args(server))
    server.add_fault(
        op="GetObject",
        endpoint="lota",
        status=503,
        code="ServiceUnavailable",
        message="down",
        times=-1,
    )
    try:
        assert read_all(m.path / "fb.bin") == pattern("fb.bin", 4 * MiB)
    finally:
        server.clear_faults()
    assert server.all_counts()["primary"].get("GetObject", 0) >= 1
    assert "the LOTA endpoint failed" in m.log()


def test_unreachable_lota_is_not_used(server, bucket, mount):
    server.seed(bucket, [{"key": "p.bin", "size": MiB}])
    m = mount(bucket, "--lota-endpoint", "http://127.0.0.1:9", "--lota", "auto")
    server.reset()
    assert read_all(m.path / "p.bin") == pattern("p.bin", MiB)
    assert server.all_counts()["primary"].get("GetObject") == 1
    assert "is not reachable" in m.log()


def test_memory_budget_holds_with_16_parallel_readers(server, bucket, mount):
    size, budget = 24 * MiB, 64 * MiB
    server.seed(bucket, [{"key": f"r{i:02d}", "size": size} for i in range(16)])
    m = mount(bucket, *lota_args(server), "--max-memory", "64M", "--read-part-size", "4M")
    os.listdir(m.path)
    baseline = memory_kib(m.proc.pid, "VmRSS") * 1024
    digests, errors = {}, []

    def reader(i: int) -> None:
        try:
            digests[i] = hashlib.sha256(read_all(m.path / f"r{i:02d}")).hexdigest()
        except OSError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert digests == {i: hashlib.sha256(pattern(f"r{i:02d}", size)).hexdigest() for i in range(16)}
    peak = memory_kib(m.proc.pid, "VmHWM") * 1024
    # Not read-ahead: ~1 MiB per kernel request and per HTTP read in flight, threads,
    # connections. It depends on how many readers there are, not on the bytes read.
    overhead = 64 * MiB
    assert peak <= baseline + budget + overhead, (peak - baseline) / MiB
    m.stop()
    reported = int(re.search(r"read-ahead memory peaked at (\d+) bytes", m.log()).group(1))
    assert 0 < reported <= budget


def test_lota_is_off_when_asked(server, bucket, mount):
    server.seed(bucket, [{"key": "off.bin", "size": MiB}])
    mnt = mount(
        bucket, "--lota-endpoint", server.lota_url, "--lota", "off", env=cwfs_env(server)
    ).path
    server.reset()
    read_all(mnt / "off.bin")
    assert server.all_counts()["lota"] == {}
