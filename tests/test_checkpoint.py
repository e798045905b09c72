"""Issue 13: a large file written from start to end (a checkpoint) is sent part by part
while it is written; close() waits for the tail and the completion. Request counts say
what was sent when; the staged file stays the truth."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os

import pytest
from conftest import memory_kib, wait_for

from cwfs.kept import find_kept

MiB = 1 << 20
PART = 50 * MiB


def write_sequentially(fd: int, size: int, block: int = MiB) -> bytes:
    """Write ``size`` bytes of a pattern in ``block`` writes; the bytes written."""
    data = (hashlib.sha256(b"checkpoint").digest() * (block // 32 + 1))[:block]
    written = []
    for offset in range(0, size, block):
        piece = data[: min(block, size - offset)]
        os.write(fd, piece)
        written.append(piece)
    return b"".join(written)


def uploads_open(s3, bucket: str) -> list:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def test_parts_go_out_while_the_file_is_written_and_close_sends_only_the_tail(
    server, bucket, s3, mount
):
    m = mount(bucket)
    server.reset()
    fd = os.open(m.path / "ckpt", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data = write_sequentially(fd, 4 * PART)
        # Parts 1-3 are full, and the writer has moved past them: sent before close.
        wait_for(lambda: server.counts().get("UploadPart", 0) == 3)
        before_close = server.counts()
    finally:
        os.close(fd)
    after = server.counts()
    assert before_close.get("CompleteMultipartUpload", 0) == 0
    assert after["UploadPart"] - before_close["UploadPart"] == 1  # the tail only
    assert (after["CreateMultipartUpload"], after["CompleteMultipartUpload"]) == (1, 1)
    assert after.get("PutObject", 0) == 0
    complete = [r for r in server.requests() if r["op"] == "CompleteMultipartUpload"]
    assert complete[0]["headers"].get("If-None-Match") == "*"
    assert s3.get_object(Bucket=bucket, Key="ckpt")["Body"].read() == data
    assert uploads_open(s3, bucket) == []


def test_a_write_into_a_part_already_sent_sends_that_part_again(server, bucket, s3, mount):
    m = mount(bucket)
    server.reset()
    fd = os.open(m.path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        data = bytearray(write_sequentially(fd, 2 * PART + 3 * MiB))
        wait_for(lambda: server.counts().get("UploadPart", 0) == 2)
        os.pwrite(fd, b"X" * 100, 10 * MiB)  # into part 1, already sent
        data[10 * MiB : 10 * MiB + 100] = b"X" * 100
    finally:
        os.close(fd)
    assert server.counts()["UploadPart"] == 2 + 2  # part 1 again, and the tail
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == bytes(data)


def test_a_truncated_stream_drops_the_parts_past_the_end(server, bucket, s3, mount):
    m = mount(bucket)
    fd = os.open(m.path / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        data = write_sequentially(fd, 3 * PART + MiB)
        wait_for(lambda: server.counts().get("UploadPart", 0) >= 3)
        os.ftruncate(fd, PART + 7)  # parts 2 and 3 were sent; 2 is the tail now
    finally:
        os.close(fd)
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == data[: PART + 7]
    assert uploads_open(s3, bucket) == []


def test_a_part_that_keeps_failing_fails_close_keeps_the_data_and_leaves_no_upload(
    server, bucket, s3, mount
):
    m = mount(bucket, "--max-attempts", "2")
    server.add_fault(op="UploadPart", bucket=bucket, status=500, code="InternalError", times=-1)
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        data = write_sequentially(fd, PART + 5 * MiB)
        with pytest.raises(OSError) as failed:
            os.close(fd)
    finally:
        server.clear_faults()
    assert failed.value.errno == errno.EIO
    m.stop()  # then what it kept is kept data
    kept = find_kept([m.cache_dir])
    assert [k.path.read_bytes() == data for k in kept] == [True]
    assert kept[0].record is not None and kept[0].record.key == "f"
    assert "InternalError" in kept[0].record.reason
    assert uploads_open(s3, bucket) == []


def test_a_file_unlinked_while_written_leaves_no_upload(server, bucket, s3, mount):
    m = mount(bucket)
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_sequentially(fd, 2 * PART + MiB)
        wait_for(lambda: uploads_open(s3, bucket))
        os.unlink(m.path / "f")
        write_sequentially(fd, PART)
    finally:
        os.close(fd)
    wait_for(lambda: not uploads_open(s3, bucket))
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)


def test_writing_a_large_file_holds_no_part_in_memory(server, bucket, s3, mount):
    """Parts go from the staged file to the socket: writing 1 GiB with 4 parts of 50 MiB
    in flight costs the mount no 200 MiB (it did before)."""
    m = mount(bucket)
    baseline = memory_kib(m.proc.pid, "VmRSS") * MiB // 1024
    fd = os.open(m.path / "big", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_sequentially(fd, 1 << 30)
    finally:
        os.close(fd)
    peak = memory_kib(m.proc.pid, "VmHWM") * MiB // 1024
    assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == 1 << 30
    assert peak - baseline < 100 * MiB, f"{(peak - baseline) / MiB:.0f} MiB over idle"


def test_fsync_completes_the_object_and_later_writes_start_a_new_upload(server, bucket, s3, mount):
    m = mount(bucket)
    server.reset()
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        first = write_sequentially(fd, PART + 2 * MiB)
        os.fsync(fd)
        assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == first
        second = write_sequentially(fd, PART)
    finally:
        os.close(fd)
    assert s3.get_object(Bucket=bucket, Key="f")["Body"].read() == first + second
    counts = server.counts()
    assert (counts["CreateMultipartUpload"], counts["CompleteMultipartUpload"]) == (2, 2)
    assert uploads_open(s3, bucket) == []


@pytest.mark.parametrize("chmod", [False, True])
def test_a_streamed_object_stores_the_mode_set_before_close(server, bucket, s3, mount, chmod):
    """The upload began with the mode of the file then: a chmod before close is stored
    with one self-copy after the completion; without one, nothing more is sent."""
    m = mount(bucket)
    server.reset()
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_sequentially(fd, PART + MiB)
        wait_for(lambda: server.counts().get("UploadPart", 0) >= 1)
        if chmod:
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    stored = s3.head_object(Bucket=bucket, Key="f")["Metadata"]
    assert int(stored["mode"]) & 0o777 == (0o600 if chmod else 0o644)
    assert server.counts().get("CopyObject", 0) == int(chmod)


def test_a_mount_killed_while_streaming_leaves_its_upload_to_the_next_mount(
    server, bucket, s3, mount
):
    m = mount(bucket)
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        write_sequentially(fd, 2 * PART + MiB)
        wait_for(lambda: uploads_open(s3, bucket))
        m.proc.kill()
        m.proc.wait()
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)
    second = mount(bucket, "--cache-dir", str(m.cache_dir))
    wait_for(lambda: not uploads_open(s3, bucket))
    wait_for(lambda: "aborted the multipart upload of 'f'" in second.log())  # logged after
