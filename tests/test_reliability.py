"""Issue 12: nothing lost, nothing silent. Reads that never end early or mix versions."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time

import pytest
import trio

from cwfs.server.seed import pattern
from cwfs.store import ObjectStore

MiB = 1 << 20


def read_on(f, size: int) -> tuple[bytes, int | None]:
    """Read to the end in 1 MiB pieces: the bytes, and the errno that stopped it (or None)."""
    chunks = []
    try:
        while chunk := f.read(MiB):
            chunks.append(chunk)
    except OSError as exc:
        return b"".join(chunks), exc.errno
    return b"".join(chunks), None


@pytest.mark.parametrize("change", ["replaced", "deleted"])
def test_a_read_keeps_its_version_or_fails_with_estale(server, bucket, s3, mount, change):
    """Another client replaces (or deletes) a file while it is read: the reader gets the
    rest of the version it opened or ESTALE, never an early end of file."""
    size = 64 * MiB
    server.seed(bucket, [{"key": "big", "size": size}])
    m = mount(bucket)
    expected = pattern("big", size)
    with open(m.path / "big", "rb", buffering=0) as f:
        first = f.read(16 * MiB)
        if change == "replaced":
            s3.put_object(Bucket=bucket, Key="big", Body=b"n" * (2 * MiB))
        else:
            s3.delete_object(Bucket=bucket, Key="big")
        time.sleep(1.5)  # past the TTL: the kernel asks for the attributes again
        assert os.fstat(f.fileno()).st_size == size, "fstat shows what was opened"
        rest, failure = read_on(f, size)
    got = first + rest
    assert got == expected[: len(got)], "only bytes of the version opened"
    assert len(got) == size or failure == errno.ESTALE, (len(got), failure)
    if change == "replaced":  # a new open sees the new version
        assert (m.path / "big").read_bytes() == b"n" * (2 * MiB)
    else:  # once closed, the name is gone
        time.sleep(1.1)
        assert not (m.path / "big").exists()


def test_this_mounts_own_changes_show_while_a_reader_has_the_old_version(server, bucket, mount):
    """Only another client's change keeps the name on the version being read; a write,
    chmod or rename onto the name on this mount shows at once, as on a local disk."""
    m = mount(bucket)
    (m.path / "f").write_bytes(b"old version")
    (m.path / "other").write_bytes(b"moved over it")
    with open(m.path / "f", "rb") as reader:
        assert reader.read(3) == b"old"
        (m.path / "f").write_bytes(b"new!")
        time.sleep(1.2)
        assert os.stat(m.path / "f").st_size == 4
        os.chmod(m.path / "f", 0o600)
        time.sleep(1.2)
        assert os.stat(m.path / "f").st_mode & 0o777 == 0o600
        os.rename(m.path / "other", m.path / "f")
        time.sleep(1.2)
        assert os.stat(m.path / "f").st_size == len(b"moved over it")
    assert (m.path / "f").read_bytes() == b"moved over it"


def test_a_get_cut_midway_is_resumed_where_it_stopped(server, bucket, mount):
    """A connection reset in the middle of a GET's body: the rest is fetched from the byte
    where it stopped (same If-Match), and the reader never sees an error."""
    size = 24 * MiB
    server.seed(bucket, [{"key": "f", "size": size}])
    m = mount(bucket, "--direct-io")
    server.reset()
    server.add_fault(op="GetObject", bucket=bucket, phase="cut", cut_at=300_000, times=3)
    with open(m.path / "f", "rb", buffering=0) as f:
        data, failure = read_on(f, size)
    assert failure is None and data == pattern("f", size)
    gets = [r for r in server.requests() if r["op"] == "GetObject"]
    assert len(gets) <= size // (4 * MiB) + 8, len(gets)
    assert all(r["headers"].get("If-Match") for r in gets), "every resumed GET keeps If-Match"


def test_sigterm_names_and_keeps_files_still_open_for_writing(server, bucket, s3, mount):
    """SIGTERM with files open for writing: nothing incomplete is uploaded, each kept file
    is named in the log with its size, what was uploaded leaves the cache directory, and
    the exit status says data was kept (issue 12 §4)."""
    m = mount(bucket)
    synced = open(m.path / "synced", "wb")  # noqa: SIM115 - held open across the signal
    synced.write(b"s" * 1000)
    synced.flush()
    os.fsync(synced.fileno())  # uploaded, and unchanged since
    pending = [open(m.path / f"pending{i}", "wb") for i in range(2)]  # noqa: SIM115
    for i, f in enumerate(pending):
        f.write(b"p" * (2000 + i))
        f.flush()
    m.proc.send_signal(signal.SIGTERM)
    status = m.proc.wait(timeout=30)
    for f in (synced, *pending):
        with contextlib.suppress(OSError):
            f.close()
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))
    assert keys == ["synced"]
    assert status == 4, m.log()
    log = m.log()
    assert "'pending0' (2000 bytes)" in log and "'pending1' (2001 bytes)" in log, log
    assert "synced" not in log.split("received SIGTERM")[1], "uploaded data is not 'kept'"
    assert sorted(p.stat().st_size for p in m.staged_files()) == [2000, 2001]


def test_a_resumed_get_returns_each_byte_once(server, bucket, store_settings):
    """The store's ranged GET, cut twice midway with no read-ahead listening (a demand
    read): the bytes it returns are the range, each once, in order."""
    size = 3 * MiB
    etag = server.seed(bucket, [{"key": "f", "size": size}])[0]["etag"]
    server.add_fault(op="GetObject", bucket=bucket, phase="cut", cut_at=300_000, times=2)

    async def fetch() -> bytes:
        return b"".join(await ObjectStore(store_settings).get_range("f", 0, size - 1, etag))

    try:
        data = trio.run(fetch)
    finally:
        server.clear_faults()
    assert data == pattern("f", size)


def test_a_10_s_outage_with_16_parallel_writers_fails_no_write(server, bucket, s3, mount):
    """Every request keeps its own attempts: botocore's shared retry quota, drained by
    16 writers in a second, made 344 of 640 writes fail with EIO in such an outage."""
    m = mount(bucket)
    server.reset()
    server.add_fault(op="PutObject", bucket=bucket, phase="reset", times=-1)
    outage = threading.Timer(10.0, server.clear_faults)
    outage.start()
    failures: list[str] = []

    def writer(number: int) -> None:
        for i in range(4):
            name = f"w{number}-{i}"
            try:
                (m.path / name).write_bytes(name.encode() * 100)
            except OSError as exc:
                failures.append(f"{name}: {exc}")

    try:
        threads = [threading.Thread(target=writer, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        outage.cancel()
        server.clear_faults()
    assert failures == []
    for number in range(16):
        for i in range(4):
            name = f"w{number}-{i}"
            assert s3.get_object(Bucket=bucket, Key=name)["Body"].read() == name.encode() * 100
    # The outage was met, and retried through: at least two refused attempts for each of
    # the 4 uploads in flight at its start (16 refused was the least seen in 10 s).
    assert server.counts()["PutObject"] >= 64 + 8


def test_a_stalled_server_fails_a_lookup_with_etimedout_after_timeout_attempts(
    server, bucket, mount
):
    """A server that takes requests and never answers: with the defaults, one `stat`
    waited 678 s (60 s x 10 attempts, a LIST and then a HEAD). Now the call fails after
    `--timeout-attempts` (3) timeouts of its first request."""
    m = mount(bucket, "--read-timeout", "0.5")
    server.reset()
    server.add_fault(bucket=bucket, delay=10, times=-1)
    try:
        with pytest.raises(OSError) as failed:
            os.stat(m.path / "not-there")
        counts = server.counts()
    finally:
        server.clear_faults()
    assert failed.value.errno == errno.ETIMEDOUT
    assert counts == {"ListObjectsV2": 3}
    assert "gave up after 3 attempts" in m.log()


def test_a_completion_the_server_takes_long_to_build_is_waited_for_not_retried(
    server, bucket, s3, mount
):
    """The server answers CompleteMultipartUpload once the object is built: for 4 GiB the
    embedded server was silent past --read-timeout, and each retried completion made it
    start over (7 for one file). Such requests wait for 120 s of silence at least."""
    m = mount(bucket, "--part-size", "5M", "--read-timeout", "1")
    data = os.urandom(12 * MiB)
    server.reset()
    server.add_fault(op="CompleteMultipartUpload", bucket=bucket, phase="slow", delay=3, times=1)
    try:
        (m.path / "big").write_bytes(data)
    finally:
        server.clear_faults()
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == data
    assert server.counts()["CompleteMultipartUpload"] == 1


def test_a_stalled_server_blocks_nothing_the_caches_answer(server, bucket, mount):
    """40 reads stuck on a stalled server leave the mount free to answer the listings and
    lookups it has cached (with 32 FUSE tasks, the old default, all were taken)."""
    server.seed(bucket, [{"key": f"r/f{i}", "size": 100_000} for i in range(40)])
    server.seed(bucket, [{"key": f"d/f{i}", "size": 10 + i} for i in range(5)], False)
    m = mount(bucket, "--metadata-ttl", "600", "--read-timeout", "4")
    names = sorted(os.listdir(m.path / "d"))
    assert len(os.listdir(m.path / "r")) == 40
    server.add_fault(bucket=bucket, delay=15, times=-1)
    stuck = [threading.Thread(target=read_quietly, args=(m.path / f"r/f{i}",)) for i in range(40)]
    try:
        for thread in stuck:
            thread.start()
        time.sleep(1.0)
        for _ in range(3):
            assert sorted(os.listdir(m.path / "d")) == names  # FUSE readdir, from the cache
            assert [os.stat(m.path / "d" / name).st_size for name in names] == list(range(10, 15))
        assert all(thread.is_alive() for thread in stuck)  # answered while they wait
    finally:
        server.clear_faults()
        for thread in stuck:
            thread.join()


def read_quietly(path: os.PathLike[str]) -> None:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.read()


@pytest.mark.parametrize("abort_answer_lost", [False, True])
def test_a_multipart_upload_whose_creation_answer_was_lost_leaves_no_upload_open(
    server, bucket, s3, mount, abort_answer_lost
):
    """CreateMultipartUpload carried out but its answer lost: the retry creates a second
    upload, and the first, whose id we never learnt, is aborted instead of left open. The
    abort's own answer lost too: its retry meets NoSuchUpload, which is what it wanted (a
    10-minute soak at 10% faults ended 4 writes in EIO that way)."""
    m = mount(bucket, "--part-size", "5M")
    server.reset()
    server.add_fault(op="CreateMultipartUpload", bucket=bucket, phase="after", status=500, times=1)
    if abort_answer_lost:
        server.add_fault(
            op="AbortMultipartUpload", bucket=bucket, phase="after", status=500, times=1
        )
    data = os.urandom(12 * MiB)
    (m.path / "big").write_bytes(data)
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == data
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert server.counts()["AbortMultipartUpload"] == 1 + abort_answer_lost
