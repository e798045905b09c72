"""Renaming through a real mount: one RenameObject per file, atomic, resumable for trees."""

from __future__ import annotations

import ctypes
import errno
import os
import subprocess
import threading
import time

import pytest

from cwfs.server.seed import pattern

MiB = 1 << 20
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
AT_FDCWD = -100
_libc = ctypes.CDLL(None, use_errno=True)


def renameat2(old, new, flags):
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def keys(s3, bucket, prefix=""):
    return sorted(
        o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    )


def all_keys(s3, bucket):
    names, token = [], None
    while True:
        page = s3.list_objects_v2(Bucket=bucket, **({"ContinuationToken": token} if token else {}))
        names += [o["Key"] for o in page.get("Contents", [])]
        token = page.get("NextContinuationToken")
        if not token:
            return sorted(names)


def test_mv_is_exactly_one_rename_object(server, bucket, s3, mount):
    s3.put_object(
        Bucket=bucket,
        Key="a",
        Body=b"payload",
        Metadata={"mtime": "1600000000.000000001", "mode": "33184"},
    )
    mnt = mount(bucket, "--metadata-ttl", "30", "--negative-ttl", "30").path
    before = os.stat(mnt / "a")
    assert not (mnt / "b").exists()
    server.reset()
    subprocess.run(["mv", str(mnt / "a"), str(mnt / "b")], check=True)
    assert server.counts() == {"RenameObject": 1}
    rename = server.requests()[0]
    assert rename["headers"].get("x-amz-client-token")
    assert keys(s3, bucket) == ["b"]
    head = s3.head_object(Bucket=bucket, Key="b")
    assert head["Metadata"] == {"mtime": "1600000000.000000001", "mode": "33184"}
    assert (mnt / "b").read_bytes() == b"payload"
    after = os.stat(mnt / "b")
    assert (after.st_mtime_ns, after.st_mode, after.st_ino) == (
        before.st_mtime_ns,
        before.st_mode,
        before.st_ino,
    )
    assert not (mnt / "a").exists()  # the cache forgot the old name at once
    assert os.listdir(mnt) == ["b"]


def test_noreplace_refuses_an_existing_destination(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="src", Body=b"src")
    s3.put_object(Bucket=bucket, Key="known", Body=b"known")
    mnt = mount(bucket, "--negative-ttl", "30").path
    with pytest.raises(FileExistsError):
        renameat2(mnt / "src", mnt / "known", RENAME_NOREPLACE)
    subprocess.run(["mv", "-n", str(mnt / "src"), str(mnt / "known")])
    # A destination created behind the mount's back: only the store can refuse it.
    assert not (mnt / "late").exists()
    s3.put_object(Bucket=bucket, Key="late", Body=b"late")
    server.reset()
    with pytest.raises(FileExistsError):
        renameat2(mnt / "src", mnt / "late", RENAME_NOREPLACE)
    rename = [r for r in server.requests() if r["op"] == "RenameObject"]
    assert (
        len(rename) == 1
        and rename[0]["headers"].get("If-None-Match") == "*"
        and rename[0]["status"] == 412
    )
    assert {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys(s3, bucket)} == {
        "src": b"src",
        "known": b"known",
        "late": b"late",
    }


def test_exchange_is_refused_with_einval(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="x", Body=b"x")
    s3.put_object(Bucket=bucket, Key="y", Body=b"y")
    mnt = mount(bucket).path
    with pytest.raises(OSError) as info:
        renameat2(mnt / "x", mnt / "y", RENAME_EXCHANGE)
    assert info.value.errno == errno.EINVAL
    assert keys(s3, bucket) == ["x", "y"]


def test_replace_over_an_existing_file(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="new", Body=b"new version")
    s3.put_object(Bucket=bucket, Key="current", Body=b"old version")
    mnt = mount(bucket).path
    os.replace(mnt / "new", mnt / "current")
    assert keys(s3, bucket) == ["current"]
    assert (mnt / "current").read_bytes() == b"new version"


def test_write_temp_then_rename_is_one_put_and_one_rename(server, bucket, s3, mount):
    mnt = mount(bucket).path
    server.reset()
    with open(mnt / "x.tmp", "wb") as f:
        f.write(b"published")
        f.flush()
        os.fsync(f.fileno())
    os.rename(mnt / "x.tmp", mnt / "x")
    counts = server.counts()
    assert (counts.get("PutObject"), counts.get("RenameObject")) == (1, 1), counts
    assert not {"GetObject", "CopyObject", "DeleteObject"} & set(counts), counts
    assert keys(s3, bucket) == ["x"]


def test_renaming_a_file_open_with_unwritten_changes(server, bucket, s3, mount):
    mnt = mount(bucket).path
    f = open(mnt / "draft", "wb", buffering=0)
    f.write(b"first half ")
    os.rename(mnt / "draft", mnt / "final")
    f.write(b"second half")
    f.close()
    assert keys(s3, bucket) == ["final"]
    assert s3.get_object(Bucket=bucket, Key="final")["Body"].read() == b"first half second half"


def test_readers_see_the_whole_file_or_nothing_during_mv(server, bucket, s3, mount):
    body = pattern("a.bin", 8 * MiB)
    server.seed(bucket, [{"key": "a.bin", "size": len(body)}])
    mnt = mount(bucket, "--metadata-ttl", "0", "--negative-ttl", "0").path
    outcomes, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                outcomes.append((mnt / "b.bin").read_bytes() == body)
            except FileNotFoundError:
                outcomes.append(None)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        subprocess.run(["mv", str(mnt / "a.bin"), str(mnt / "b.bin")], check=True)
        deadline = time.monotonic() + 30
        while True not in outcomes and False not in outcomes and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join()
    assert set(outcomes) <= {None, True}, "a reader saw partial or mixed content"
    assert True in outcomes, "the reader never saw the renamed file"


def _seed_tree(server, bucket, prefix, count):
    objects = [
        {"key": f"{prefix}/d{i % 3}/e{i % 5}/file-{i:04d}", "size": i % 50} for i in range(count)
    ]
    server.seed(bucket, objects + [{"key": f"{prefix}/", "size": 0}])
    return [o["key"][len(prefix) + 1 :] for o in objects]


def test_directory_rename_moves_every_object_with_one_rename_each(server, bucket, s3, mount):
    names = _seed_tree(server, bucket, "src", 300)
    mnt = mount(bucket).path
    os.stat(mnt / "src")
    server.reset()
    subprocess.run(["mv", str(mnt / "src"), str(mnt / "dst")], check=True)
    counts = server.counts()
    assert counts["RenameObject"] == 301, counts  # 300 files and the marker
    assert not {"CopyObject", "PutObject", "DeleteObject", "GetObject"} & set(counts)
    assert all_keys(s3, bucket) == sorted(["dst/"] + [f"dst/{n}" for n in names])
    assert sorted(
        os.path.relpath(os.path.join(d, f), mnt / "dst")
        for d, _, fs in os.walk(mnt / "dst")
        for f in fs
    ) == sorted(names)
    assert not (mnt / "src").exists()
    assert s3.get_object(Bucket=bucket, Key=f"dst/{names[7]}")["Body"].read() == pattern(
        f"src/{names[7]}", 7
    )


def test_interrupted_directory_rename_loses_nothing_and_resumes(server, bucket, s3, mount):
    names = _seed_tree(server, bucket, "src", 120)
    m = mount(bucket, "--max-attempts", "1")
    server.add_fault(
        op="RenameObject", status=500, code="InternalError", message="injected", times=-1, after=50
    )
    try:
        result = subprocess.run(
            ["mv", str(m.path / "src"), str(m.path / "dst")], capture_output=True, text=True
        )
    finally:
        server.clear_faults()
    assert result.returncode != 0 and "Input/output error" in result.stderr
    moved, left = keys(s3, bucket, "dst/"), keys(s3, bucket, "src/")
    assert 50 <= len(moved) < 121 and len(moved) + len(left) == 121
    assert sorted(k[4:] for k in moved + left) == sorted(
        [""] + names
    )  # each object under exactly one name
    assert "repeat the same rename" in m.log()
    subprocess.run(["mv", str(m.path / "src"), str(m.path / "dst")], check=True)
    assert keys(s3, bucket, "src/") == [] and keys(s3, bucket) == sorted(
        ["dst/"] + [f"dst/{n}" for n in names]
    )
    assert len(list((m.path / "dst").rglob("file-*"))) == 120


def test_versioned_bucket_copies_and_deletes_and_says_so(server, bucket, s3, mount):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="a", Body=b"versioned", Metadata={"mode": "33152"})
    m = mount(bucket)
    server.reset()
    os.rename(m.path / "a", m.path / "b")
    counts = server.counts()
    assert (
        counts.get("RenameObject", 0) == 0
        and counts["CopyObject"] == 1
        and counts["DeleteObject"] == 1
    )
    assert s3.get_object(Bucket=bucket, Key="b")["Body"].read() == b"versioned"
    assert s3.head_object(Bucket=bucket, Key="b")["Metadata"] == {"mode": "33152"}
    assert not (m.path / "a").exists()
    assert "copy + delete, not atomic" in m.log()


def test_atomic_mode_refuses_on_a_versioned_bucket(server, bucket, s3, mount):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3.put_object(Bucket=bucket, Key="a", Body=b"stay")
    m = mount(bucket, "--rename-mode", "atomic")
    with pytest.raises(OSError) as info:
        os.rename(m.path / "a", m.path / "b")
    assert info.value.errno == errno.ENOTSUP
    assert "--rename-mode is atomic" in m.log()
    assert (m.path / "a").read_bytes() == b"stay"


def test_auto_mode_falls_back_once_when_the_store_refuses_rename(server, bucket, s3, mount):
    for key in ("a", "c"):
        s3.put_object(Bucket=bucket, Key=key, Body=key.encode())
    m = mount(bucket)
    server.add_fault(
        op="RenameObject",
        status=501,
        code="NotImplemented",
        message="A header you provided implies functionality that is not implemented",
        times=-1,
    )
    try:
        os.rename(m.path / "a", m.path / "b")
        os.rename(m.path / "c", m.path / "d")
    finally:
        server.clear_faults()
    assert server.counts().get("RenameObject") == 1  # tried once, then remembered
    assert keys(s3, bucket) == ["b", "d"]
    assert "renames are copy + delete from now on" in m.log()
