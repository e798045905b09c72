"""Findings of tests/test_model.py: differences from a local disk that docs/semantics.md
did not explain, each reduced to a plain test of the behaviour the docs promise. Each
failed on the code the model test first ran on (issue 12 §7)."""

from __future__ import annotations

import os
import stat

import pytest


def test_a_listing_while_a_file_is_written_does_not_shrink_it(server, bucket, s3, mount):
    """Appending to a file, with an `ls` of its directory in between, loses data.

    semantics.md: "stat shows the staged size" and "This mount's own changes are visible
    at once". But readdir answers a file being written with its object's size from the
    listing (2 bytes here); the kernel takes that size (readdirplus) over the 12 bytes
    written, so fstat says 2 and the next O_APPEND write lands at offset 2, over the
    bytes written before it. The upload then carries the overwritten content."""
    m = mount(bucket)
    (m.path / "d").mkdir()
    (m.path / "d" / "log").write_bytes(b"xy")
    fd = os.open(m.path / "d" / "log", os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, b"0123456789")
        os.listdir(m.path / "d")
        size_after_listing = os.fstat(fd).st_size
        os.write(fd, b"TAIL")
    finally:
        os.close(fd)
    stored = s3.get_object(Bucket=bucket, Key="d/log")["Body"].read()
    assert (size_after_listing, stored) == (12, b"xy0123456789TAIL")  # was (2, b"xyTAIL456789")


def test_a_listing_while_a_file_is_open_for_writing_keeps_its_new_mode(server, bucket, mount):
    """chmod of a file open for writing, then `ls` of its directory: the old mode shows
    again, after the close too, until the TTL expires.

    semantics.md: a change by path to a file a descriptor is writing "goes out with that
    file's next close", and "This mount's own changes are visible at once, on this
    mount". readdir gives the entry the mode of the object as uploaded (0640), the kernel
    takes it, and stat shows 0640 until the next lookup after the TTL (then 0600, which
    is what the bucket holds)."""
    m = mount(bucket)
    (m.path / "d").mkdir()
    path = m.path / "d" / "f"
    path.write_bytes(b"xy")
    os.chmod(path, 0o640)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.chmod(path, 0o600)
        os.listdir(m.path / "d")
        while_open = stat.S_IMODE(os.stat(path).st_mode)
    finally:
        os.close(fd)
    after_close = stat.S_IMODE(os.stat(path).st_mode)
    assert (oct(while_open), oct(after_close)) == ("0o600", "0o600")  # was 0o640, 0o640


@pytest.mark.parametrize("edit", ["truncate", "append"])
def test_a_get_cut_midway_while_fetching_a_file_to_edit_is_resumed(server, bucket, mount, edit):
    """Growing a closed file with truncate (or appending to it) fails with EIO when the
    GetObject that fetches it into the staging file is cut midway once.

    semantics.md: "A GET whose body stops midway (a connection reset, a read timeout)
    is resumed from the byte where it stopped ... up to --max-attempts GETs", and
    connection errors are retried (Errors). Reads do resume; the fetch for an edit does
    not: the log says "setattr 'f': 100 read, but total bytes expected is 1290.
    (GetObject 'f', IncompleteReadError) -> EIO"."""
    server.seed(bucket, [{"key": "f", "size": 1290}])
    m = mount(bucket)
    os.stat(m.path / "f")
    server.add_fault(op="GetObject", bucket=bucket, phase="cut", cut_at=100, times=1)
    try:
        if edit == "truncate":
            os.truncate(m.path / "f", 4096)
        else:
            with open(m.path / "f", "ab") as f:
                f.write(b"tail")
    finally:
        server.clear_faults()
    size = 4096 if edit == "truncate" else 1294
    assert os.stat(m.path / "f").st_size == size


def test_mkdir_whose_response_was_lost_succeeds(server, bucket, s3, mount):
    """mkdir fails with EEXIST when the response to its marker's PutObject is lost (a 500
    after the marker was written): the retry's `If-None-Match: *` meets its own marker.

    semantics.md: "If a retried request finds that its own earlier attempt had committed
    (the response was lost), the upload counts as done"; file uploads do that (the log
    says "a retried request found its own earlier attempt committed"), the marker of
    mkdir does not: "mkdir 'd': a directory marker already exists -> EEXIST"."""
    m = mount(bucket)
    server.add_fault(
        op="PutObject", bucket=bucket, status=500, code="InternalError", phase="after", times=1
    )
    try:
        os.mkdir(m.path / "d")
    finally:
        server.clear_faults()
    assert s3.head_object(Bucket=bucket, Key="d/")["ContentLength"] == 0
