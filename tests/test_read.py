"""Reading files through a real mount: exact bytes, conditional ranged GETs, errors."""

from __future__ import annotations

import errno
import hashlib
import os
import time

import pytest

from cwfs.server.seed import pattern

SIZES = {"empty": 0, "one": 1, "five-mib": 5 << 20, "hundred-mib": 100 << 20}


def _digest_of_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def test_files_read_back_byte_identical(server, bucket, s3, mount):
    expected = {}
    for name, size in SIZES.items():
        body = os.urandom(size)
        s3.put_object(Bucket=bucket, Key=f"data/{name}", Body=body)
        expected[name] = hashlib.sha256(body).hexdigest()
    mnt = mount(bucket).path
    server.reset()
    for name, size in SIZES.items():
        assert os.stat(mnt / "data" / name).st_size == size
        assert _digest_of_file(mnt / "data" / name) == expected[name], name
    gets = [r for r in server.requests() if r["op"] == "GetObject"]
    assert gets, "reads must reach the store"
    assert all(r["headers"].get("If-Match") for r in gets), "every ranged GET carries If-Match"
    assert all(r["headers"].get("Range") for r in gets), "reads are ranged"
    assert not any(r["key"].endswith("empty") for r in gets), "an empty file needs no GET"


def test_random_access_reads(server, bucket, s3, mount):
    body = os.urandom(3 << 20)
    s3.put_object(Bucket=bucket, Key="r.bin", Body=body)
    mnt = mount(bucket).path
    with open(mnt / "r.bin", "rb", buffering=0) as f:
        for offset, size in [
            (0, 10),
            (1 << 20, 4096),
            ((3 << 20) - 5, 100),
            (123457, 1),
            (3 << 20, 10),
        ]:
            f.seek(offset)
            assert f.read(size) == body[offset : offset + size]


def test_object_replaced_mid_read_fails_with_estale(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="v.bin", Body=b"A" * (8 << 20))
    m = mount(bucket, "--read-part-size", "1M")  # larger than one part: not fetched whole
    with open(m.path / "v.bin", "rb", buffering=0) as f:
        assert f.read(4096) == b"A" * 4096
        s3.put_object(Bucket=bucket, Key="v.bin", Body=b"B" * (8 << 20))
        f.seek(7 << 20)
        with pytest.raises(OSError) as info:
            f.read(4096)
    assert info.value.errno == errno.ESTALE
    assert "changed in the store while open" in m.log()


def test_throttling_is_retried(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="t.txt", Body=b"patience")
    mnt = mount(bucket).path
    os.stat(mnt / "t.txt")
    server.reset()
    server.add_fault(
        op="GetObject",
        status=503,
        code="SlowDown",
        message="Please reduce your request rate.",
        times=2,
    )
    try:
        assert (mnt / "t.txt").read_bytes() == b"patience"
    finally:
        server.clear_faults()
    assert server.counts()["GetObject"] == 3


def test_persistent_server_errors_become_eio_with_the_code_logged(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="e.txt", Body=b"never")
    m = mount(bucket, "--max-attempts", "2")
    os.stat(m.path / "e.txt")
    server.add_fault(
        op="GetObject",
        status=500,
        code="InternalError",
        message="We encountered an internal error.",
        times=-1,
    )
    try:
        with pytest.raises(OSError) as info:
            (m.path / "e.txt").read_bytes()
    finally:
        server.clear_faults()
    assert info.value.errno == errno.EIO
    assert "InternalError" in m.log()


def test_access_denied_is_eacces(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="secret.txt", Body=b"x")
    m = mount(bucket)
    os.stat(m.path / "secret.txt")
    server.add_fault(
        op="GetObject", status=403, code="AccessDenied", message="Access Denied", times=-1
    )
    try:
        with pytest.raises(PermissionError):
            (m.path / "secret.txt").read_bytes()
    finally:
        server.clear_faults()
    assert "AccessDenied" in m.log()


def test_closing_a_file_stops_its_get_midway(server, bucket, mount):
    """An object no larger than a part is fetched whole at the first read; closing the
    file after 4 KiB stops that GET instead of downloading the rest for nobody."""
    size = 64 << 20
    server.seed(bucket, [{"key": "big.bin", "size": size}])
    mnt = mount(bucket, "--read-part-size", "64M").path
    server.add_fault(
        op="GetObject", bucket=bucket, phase="slow", delay=0.25, times=-1
    )  # 4 s for all of it
    try:
        with open(mnt / "big.bin", "rb", buffering=0) as f:
            assert f.read(4096) == pattern("big.bin", size)[:4096]
    finally:
        server.clear_faults()
    deadline = time.monotonic() + 30
    while (
        gets := [r for r in server.requests() if r["op"] == "GetObject" and r["bucket"] == bucket]
    )[-1]["body_complete"] is None:
        assert time.monotonic() < deadline, gets
        time.sleep(0.05)
    assert len(gets) == 1 and gets[0]["headers"]["Range"] == f"bytes=0-{size - 1}", gets
    assert gets[0]["body_complete"] is False and gets[0]["body_bytes"] < size, gets
