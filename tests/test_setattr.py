"""Changes by path right after a close reach S3 before the call returns.

The kernel sends RELEASE for a closed descriptor after ``close()`` has returned, so a
``truncate``, ``chmod`` or ``utime`` by path can arrive while the file still counts
as open on the mount. Whatever the interleaving, the change must be in S3 when the
call returns, and nothing may stay behind in the cache directory.
"""

from __future__ import annotations

import os

ROUNDS = 50


def body_of(s3, bucket, key) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def edit_then_close(path) -> None:
    """The issue's reproduction: create, append, edit in place, each closed at once."""
    with open(path, "wb") as f:
        f.write(b"hello")
    with open(path, "ab") as f:
        f.write(b" world")
    with open(path, "r+b") as f:
        f.seek(0)
        f.write(b"J")


def test_truncate_by_path_right_after_close_reaches_s3(server, bucket, s3, mount):
    m = mount(bucket)
    for round_ in range(ROUNDS):
        path = m.path / f"t{round_}.txt"
        edit_then_close(path)
        os.truncate(path, 8)
        assert body_of(s3, bucket, path.name) == b"Jello wo", f"round {round_}"
        assert path.read_bytes() == b"Jello wo"
    m.wait_until_nothing_staged()
    assert "could not be uploaded" not in m.log() and "uncommitted" not in m.log()


def test_chmod_by_path_right_after_close_reaches_s3(server, bucket, s3, mount):
    m = mount(bucket)
    for round_ in range(ROUNDS):
        path = m.path / f"c{round_}.txt"
        edit_then_close(path)
        os.chmod(path, 0o750)
        head = s3.head_object(Bucket=bucket, Key=path.name)
        assert int(head["Metadata"]["mode"]) & 0o7777 == 0o750, f"round {round_}"
        assert body_of(s3, bucket, path.name) == b"Jello world"
    m.wait_until_nothing_staged()


def test_utime_by_path_right_after_close_reaches_s3(server, bucket, s3, mount):
    m = mount(bucket)
    for round_ in range(ROUNDS):
        path = m.path / f"u{round_}.txt"
        edit_then_close(path)
        mtime_ns = 978_307_200_000_000_000 + round_
        os.utime(path, ns=(mtime_ns, mtime_ns))
        head = s3.head_object(Bucket=bucket, Key=path.name)
        assert head["Metadata"]["mtime"] == f"978307200.{round_:09d}", f"round {round_}"
        assert os.stat(path).st_mtime_ns == mtime_ns
    m.wait_until_nothing_staged()


def test_truncate_by_path_of_a_file_being_written_goes_out_with_its_close(
    server, bucket, s3, mount
):
    """A descriptor still writing the file: the truncate shows at once on the mount and
    reaches S3 with the writer's close, together with the writer's later changes."""
    m = mount(bucket)
    path = m.path / "shared.txt"
    with open(path, "wb") as writer:
        writer.write(b"0123456789")
        writer.flush()
        server.reset()
        os.truncate(path, 4)
        assert os.stat(path).st_size == 4
        assert server.counts().get("PutObject", 0) == 0
        writer.seek(0, os.SEEK_END)
        writer.write(b"XY")
    assert body_of(s3, bucket, "shared.txt") == b"0123XY"
    m.wait_until_nothing_staged()
