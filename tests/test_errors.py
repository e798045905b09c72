"""One bad request fails that request with a clear errno; the mount and other files carry on."""

from __future__ import annotations

import errno
import os
import subprocess

import pytest

HUGE = 999_999_999_999_999  # about 909 TiB: more than any object can be
KiB = 1 << 10


def body_of(s3, bucket, key) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_truncate_beyond_the_largest_object_is_efbig_and_the_mount_stays(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="f", Body=b"data")
    m = mount(bucket)
    os.stat(m.path / "f")
    server.reset()
    result = subprocess.run(
        ["truncate", "-s", str(HUGE), str(m.path / "f")], capture_output=True, text=True
    )
    assert result.returncode != 0 and "File too large" in result.stderr, result
    with open(m.path / "f", "r+b") as f, pytest.raises(OSError) as info:
        os.ftruncate(f.fileno(), HUGE)
    assert info.value.errno == errno.EFBIG
    assert server.counts() == {}, "refused before anything was staged or sent"
    assert m.staged_files() == []
    assert os.listdir(m.path) == ["f"] and body_of(s3, bucket, "f") == b"data"
    assert m.proc.poll() is None


def test_growing_a_new_file_past_the_largest_object_is_efbig_at_once(server, bucket, s3, mount):
    m = mount(bucket)
    with open(m.path / "new", "wb") as f:
        with pytest.raises(OSError) as info:
            os.ftruncate(f.fileno(), HUGE)
        assert info.value.errno == errno.EFBIG
        with pytest.raises(OSError) as info:
            os.pwrite(f.fileno(), b"x", 6 << 40)  # past S3's 5 TiB
        assert info.value.errno == errno.EFBIG
        f.write(b"still fine")
    assert body_of(s3, bucket, "new") == b"still fine"
    assert "staging is at its limit" not in m.log()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 1 MiB tmpfs for the cache directory, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path = tmp_path / "tiny"
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_a_full_cache_disk_fails_one_writer_not_the_mount(server, bucket, s3, mount, tiny_disk):
    m = mount(bucket, "--cache-dir", str(tiny_disk / "cache"))
    other = os.urandom(100 * KiB)
    with open(m.path / "other.bin", "wb") as meanwhile:
        meanwhile.write(other)
        result = subprocess.run(
            ["dd", "if=/dev/urandom", f"of={m.path / 'big.bin'}", "bs=1M", "count=3"],
            capture_output=True,
            text=True,
        )
        assert result.returncode != 0 and "No space left on device" in result.stderr, result
    assert body_of(s3, bucket, "other.bin") == other
    assert sorted(os.listdir(m.path)) == ["big.bin", "other.bin"]
    assert m.proc.poll() is None
    assert "local I/O failed" in m.log() and "ENOSPC" in m.log()
    os.unlink(m.path / "big.bin")
    (m.path / "after.txt").write_bytes(b"the mount still writes")
    assert body_of(s3, bucket, "after.txt") == b"the mount still writes"


BOOM = """
import cwfs.fs
real_unlink = cwfs.fs.Filesystem.unlink
async def unlink(self, path):
    if "boom" in path:
        raise RuntimeError("injected bug")
    return await real_unlink(self, path)
cwfs.fs.Filesystem.unlink = unlink
"""


def test_an_unexpected_exception_is_eio_with_a_traceback_and_the_mount_stays(
    server, bucket, s3, mount
):
    s3.put_object(Bucket=bucket, Key="boom.txt", Body=b"x")
    m = mount(bucket, patch=BOOM)
    with open(m.path / "open.txt", "wb") as writer:
        writer.write(b"written before")
        with pytest.raises(OSError) as info:
            os.unlink(m.path / "boom.txt")
        assert info.value.errno == errno.EIO
        writer.write(b" and after")
    assert body_of(s3, bucket, "open.txt") == b"written before and after"
    assert sorted(os.listdir(m.path)) == ["boom.txt", "open.txt"]
    log = m.log()
    assert "unlink 'boom.txt': unexpected error, answered EIO" in log
    assert "RuntimeError: injected bug" in log and "Traceback" in log
    assert m.proc.poll() is None
