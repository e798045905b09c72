"""Issue 12 §5: kept data is an inventory, and it can be recovered without ever
overwriting newer data. Mounts are killed or stopped for real; `cwfs recover` runs as
a command."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import trio
from conftest import cwfs_env, wait_for

from cwfs import kept
from cwfs.kept import MountLock, Record, find_kept
from cwfs.staging import StagingArea, StagingBudget

MiB = 1 << 20


def recover(server, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cwfs", "recover", *args]
    command += ["--endpoint", server.url, "--addressing-style", "path"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def kill(m) -> None:
    """SIGKILL: the mount leaves no word, only its cache directory."""
    m.proc.kill()
    m.proc.wait()


def test_a_killed_mounts_data_is_reported_and_recovered(server, bucket, s3, mount, tmp_path):
    """SIGKILL with two files open for writing (one new, one replacing an object): the
    data stays in the mount's private cache directory with a record of each file; the
    next mount of the bucket reports it; `cwfs recover --upload` uploads both, each
    under the condition its mount would have used, and removes the orphaned directory."""
    env = cwfs_env(server, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    s3.put_object(Bucket=bucket, Key="old", Body=b"old version")
    first = mount(bucket, env=env, private_cache=True)
    new = open(first.path / "new", "wb")  # noqa: SIM115 - open across the kill
    new.write(b"n" * 3000)
    new.flush()
    old = open(first.path / "old", "r+b")  # noqa: SIM115
    old.write(b"NEW")
    old.flush()
    kill(first)
    for f in (new, old):
        with contextlib.suppress(OSError):
            f.close()
    private = list((tmp_path / "xdg" / "cwfs").glob(f"{bucket}-*"))
    assert len(private) == 1
    kept = find_kept(private)
    records = sorted((k.record.key, k.record.base_etag) for k in kept if k.record)
    old_etag = s3.head_object(Bucket=bucket, Key="old")["ETag"]
    assert records == [("new", None), ("old", old_etag)]

    second = mount(bucket, env=env, private_cache=True)
    wait_for(lambda: "earlier mounts of bucket" in second.log())
    assert "2 files (3011 bytes)" in second.log()

    listed = recover(server, env, bucket)
    assert listed.returncode == 0, listed.stderr
    assert f"{bucket}/new  3000 bytes  base new" in listed.stdout
    assert f"{bucket}/old  11 bytes  base {old_etag}" in listed.stdout
    uploaded = recover(server, env, bucket, "--upload")
    assert uploaded.returncode == 0, uploaded.stdout + uploaded.stderr
    assert s3.get_object(Bucket=bucket, Key="new")["Body"].read() == b"n" * 3000
    assert s3.get_object(Bucket=bucket, Key="old")["Body"].read() == b"NEW version"
    assert not private[0].exists()
    assert recover(server, env, bucket).stdout.strip() == "nothing is kept"


def test_recover_never_overwrites_what_changed_since(server, bucket, s3, mount, tmp_path):
    """Kept data whose key was written by someone else since: a conflict, reported, and
    the data stays kept; the newer object is untouched."""
    env = cwfs_env(server, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    s3.put_object(Bucket=bucket, Key="shared", Body=b"v1")
    m = mount(bucket, env=env, private_cache=True)
    created = open(m.path / "created", "wb")  # noqa: SIM115 - open across the signal
    created.write(b"ours, new")
    created.flush()
    replaced = open(m.path / "shared", "r+b")  # noqa: SIM115
    replaced.write(b"V2")
    replaced.flush()
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=30) == 4
    for f in (created, replaced):
        with contextlib.suppress(OSError):
            f.close()
    s3.put_object(Bucket=bucket, Key="shared", Body=b"v3 by another client")
    s3.put_object(Bucket=bucket, Key="created", Body=b"theirs")
    result = recover(server, env, bucket, "--upload")
    assert result.returncode == 1
    assert "not uploaded created: conflict" in result.stdout
    assert "not uploaded shared: conflict" in result.stdout
    assert s3.get_object(Bucket=bucket, Key="shared")["Body"].read() == b"v3 by another client"
    assert s3.get_object(Bucket=bucket, Key="created")["Body"].read() == b"theirs"
    kept = find_kept(list((tmp_path / "xdg" / "cwfs").glob(f"{bucket}-*")))
    assert sorted(k.path.read_bytes() for k in kept) == [b"V2", b"ours, new"]
    assert all("still open for writing at unmount" in k.record.reason for k in kept if k.record)


def test_a_killed_mounts_open_multipart_upload_is_aborted_by_the_next_mount(
    server, bucket, s3, mount
):
    """A mount killed while its parts were being sent leaves a multipart upload open (its
    parts billed); the next mount over the same cache directory aborts it."""
    m = mount(bucket, "--part-size", "5M")
    server.add_fault(op="UploadPart", bucket=bucket, delay=20, times=-1)

    def write() -> None:
        with contextlib.suppress(OSError):
            (m.path / "big").write_bytes(os.urandom(12 * MiB))

    writer = threading.Thread(target=write)
    try:
        writer.start()
        wait_for(lambda: s3.list_multipart_uploads(Bucket=bucket).get("Uploads"))
        kill(m)
    finally:
        server.clear_faults()
        writer.join()
    assert len(s3.list_multipart_uploads(Bucket=bucket)["Uploads"]) == 1
    second = mount(bucket, "--cache-dir", str(m.cache_dir))
    wait_for(lambda: not s3.list_multipart_uploads(Bucket=bucket).get("Uploads"))
    wait_for(lambda: "aborted the multipart upload of 'big'" in second.log())  # logged after
    assert not list(Path(m.cache_dir).glob(".upload-*"))


def test_records_say_what_a_kept_file_is_and_a_live_mounts_data_is_not_kept(tmp_path):
    data = tmp_path / "000001-k"
    data.write_bytes(b"123456789")
    lock = MountLock(tmp_path)
    record = Record("b", "http://e", "d/k", '"e1"', lock.name)
    record.write(data)
    assert Record.read(data) == record
    done = record.kept(data, "a reason")
    assert (done.size, done.crc32c, done.reason) == (9, "4waSgw==", "a reason")  # CRC32C
    assert find_kept([tmp_path]) == []  # its mount runs: being written, not kept
    lock.release()
    assert [k.path for k in find_kept([tmp_path])] == [data]


def test_data_changed_after_an_fsync_is_recovered_over_the_version_it_made(
    server, bucket, s3, mount, tmp_path
):
    """fsync uploads a version; writes after it, then SIGKILL: the record names that
    version as the base, so recover replaces it (If-Match) instead of meeting a conflict."""
    env = cwfs_env(server, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    m = mount(bucket, env=env, private_cache=True)
    f = open(m.path / "log", "wb")  # noqa: SIM115 - open across the kill
    f.write(b"first")
    f.flush()
    os.fsync(f.fileno())
    synced = s3.head_object(Bucket=bucket, Key="log")["ETag"]
    f.write(b" second")
    f.flush()
    kill(m)
    with contextlib.suppress(OSError):
        f.close()
    kept = find_kept(list((tmp_path / "xdg" / "cwfs").glob(f"{bucket}-*")))
    assert [(k.record.key, k.record.base_etag) for k in kept if k.record] == [("log", synced)]
    result = recover(server, env, bucket, "--upload")
    assert result.returncode == 0, result.stdout + result.stderr
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"first second"


def test_a_kept_file_is_checksummed_in_a_worker_thread(tmp_path, monkeypatch):
    """A kept checkpoint can be many GiB: its record's CRC32C must not stop the mount."""
    threads: list[threading.Thread] = []
    real = kept.file_crc32c

    def spy(path: Path) -> tuple[int, str]:
        threads.append(threading.current_thread())
        return real(path)

    monkeypatch.setattr(kept, "file_crc32c", spy)
    area = StagingArea(tmp_path, StagingBudget(1 << 20), Record("b", "http://e", "", None, "m"))

    async def keep() -> Path:
        staged = area.new_file("k", None)
        await staged.write(0, b"checkpoint")
        return await staged.keep("'k' was not uploaded", {"x": "1"})

    path = trio.run(keep)
    assert threads and threads[0] is not threading.main_thread()
    record = Record.read(path)
    assert record is not None and record.size == 10
    assert record.crc32c == real(path)[1] and record.metadata == {"x": "1"}
