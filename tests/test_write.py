"""Writing through a real mount: write-on-close, conditional uploads, editing, directories."""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import subprocess
import threading
import time

import pytest
from conftest import suspend_writes, wait_for

from cwfs.kept import find_kept

MiB = 1 << 20


def body_of(s3, bucket, key) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def requests_to(server, key):
    return [r for r in server.requests() if r["key"] == key]


def test_new_file_is_one_conditional_put(server, bucket, s3, mount):
    mnt = mount(bucket).path
    data = os.urandom(MiB)
    with open(mnt / "new.bin", "wb") as f:
        server.reset()
        f.write(data)
    seen = requests_to(server, "new.bin")
    assert [r["op"] for r in seen] == ["PutObject"], seen
    assert seen[0]["headers"].get("If-None-Match") == "*"
    assert seen[0]["checksum"]["algorithm"] == "CRC32C"
    assert body_of(s3, bucket, "new.bin") == data
    assert os.stat(mnt / "new.bin").st_size == MiB


def test_large_file_is_a_conditional_multipart_upload(server, bucket, s3, mount):
    m = mount(bucket)
    chunk = os.urandom(MiB)
    digest = hashlib.sha256()
    server.reset()
    with open(m.path / "big.bin", "wb") as f:
        for i in range(200):
            piece = chunk[i:] + chunk[:i]
            digest.update(piece)
            f.write(piece)
    counts = server.counts()
    assert counts.get("PutObject", 0) == 0
    assert counts["CreateMultipartUpload"] == 1 and counts["UploadPart"] == 4, counts
    complete = [r for r in server.requests() if r["op"] == "CompleteMultipartUpload"]
    assert len(complete) == 1 and complete[0]["headers"].get("If-None-Match") == "*"
    stored = hashlib.sha256()
    for part in s3.get_object(Bucket=bucket, Key="big.bin")["Body"].iter_chunks(MiB):
        stored.update(part)
    assert stored.hexdigest() == digest.hexdigest()
    m.wait_until_nothing_staged()


def test_overwrite_is_conditional_on_the_old_etag_and_downloads_nothing(server, bucket, s3, mount):
    old = s3.put_object(Bucket=bucket, Key="f.txt", Body=b"old content")["ETag"]
    mnt = mount(bucket).path
    os.stat(mnt / "f.txt")
    server.reset()
    (mnt / "f.txt").write_bytes(b"new")
    puts = [r for r in server.requests() if r["op"] == "PutObject"]
    assert len(puts) == 1 and puts[0]["headers"].get("If-Match") == old
    assert server.counts().get("GetObject", 0) == 0
    assert body_of(s3, bucket, "f.txt") == b"new"


def test_edit_in_place_random_writes_append_and_truncate(server, bucket, s3, mount):
    original = os.urandom(3 * MiB)
    s3.put_object(Bucket=bucket, Key="e.bin", Body=original)
    mnt = mount(bucket).path
    model = bytearray(original)
    with open(mnt / "e.bin", "r+b") as f:
        for offset, data in [
            (10, b"hello"),
            (2 * MiB + 7, b"x" * 5000),
            (3 * MiB - 2, b"tail-grows"),
        ]:
            f.seek(offset)
            f.write(data)
            model[offset : offset + len(data)] = data
        f.flush()
        assert os.fstat(f.fileno()).st_size == len(model)  # the staged size
        f.seek(2 * MiB)
        assert f.read(MiB) == bytes(model[2 * MiB : 3 * MiB])  # reads see unwritten changes
    assert body_of(s3, bucket, "e.bin") == bytes(model)

    subprocess.run(["sh", "-c", f"echo appended >> '{mnt / 'e.bin'}'"], check=True)
    model += b"appended\n"
    assert body_of(s3, bucket, "e.bin") == bytes(model)

    subprocess.run(["truncate", "-s", "100", str(mnt / "e.bin")], check=True)
    assert body_of(s3, bucket, "e.bin") == bytes(model[:100])
    subprocess.run(["truncate", "-s", "1M", str(mnt / "e.bin")], check=True)
    assert body_of(s3, bucket, "e.bin") == bytes(model[:100]) + bytes(MiB - 100)
    os.truncate(mnt / "e.bin", 0)
    assert body_of(s3, bucket, "e.bin") == b""


def test_file_opened_for_writing_but_unchanged_is_not_uploaded(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="same.txt", Body=b"same")
    mnt = mount(bucket).path
    os.stat(mnt / "same.txt")
    server.reset()
    with open(mnt / "same.txt", "r+b"):
        pass
    assert server.counts() == {}


def test_touch_creates_and_sets_times(server, bucket, s3, mount):
    mnt = mount(bucket).path
    subprocess.run(["touch", str(mnt / "empty")], check=True)
    assert body_of(s3, bucket, "empty") == b""
    server.reset()
    subprocess.run(["touch", "-d", "2001-02-03 04:05:06.789", str(mnt / "empty")], check=True)
    assert server.counts() == {"CopyObject": 1}  # metadata replaced server-side, no data moved
    expected = time.mktime(time.strptime("2001-02-03 04:05:06", "%Y-%m-%d %H:%M:%S")) + 0.789
    assert abs(os.stat(mnt / "empty").st_mtime - expected) < 1e-6
    assert s3.head_object(Bucket=bucket, Key="empty")["Metadata"]["mtime"].startswith(
        str(int(expected))
    )


def _make_tree(root):
    (root / "sub" / "deeper").mkdir(parents=True)
    files = {
        "a.txt": b"alpha",
        "sub/b.bin": os.urandom(300_000),
        "sub/deeper/c": b"",
        "x y.txt": b"spaces",
    }
    for i, (name, data) in enumerate(files.items()):
        (root / name).write_bytes(data)
        os.chmod(root / name, 0o640 if i % 2 else 0o600)
        os.utime(root / name, ns=(1_600_000_000_123_456_789 + i, 1_600_000_000_123_456_789 + i))
    return files


def _assert_same_tree(src, dst, files):
    for name, data in files.items():
        assert (dst / name).read_bytes() == data, name
        s, d = os.stat(src / name), os.stat(dst / name)
        assert stat.S_IMODE(d.st_mode) == stat.S_IMODE(s.st_mode), name
        assert d.st_mtime_ns == s.st_mtime_ns, name


@pytest.mark.parametrize(
    "tool",
    [
        ["cp", "-a", "{src}/.", "{dst}/"],
        ["rsync", "-a", "{src}/", "{dst}/"],
        ["rsync", "-a", "--inplace", "{src}/", "{dst}/"],
        ["tar", "xf", "{tarball}", "-C", "{dst}"],
    ],
    ids=["cp-a", "rsync-a", "rsync-a-inplace", "tar-x"],
)
def test_legacy_tools_keep_content_mode_and_mtime(server, bucket, s3, mount, tmp_path, tool):
    src = tmp_path / "src"
    src.mkdir()
    files = _make_tree(src)
    tarball = tmp_path / "t.tar"
    subprocess.run(
        ["tar", "--format=posix", "-cf", str(tarball), "-C", str(src), "."], check=True
    )  # keeps ns mtimes
    m = mount(bucket)
    dst = m.path / "dst"
    dst.mkdir()
    command = [part.format(src=src, dst=dst, tarball=tarball) for part in tool]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    _assert_same_tree(src, dst, files)
    assert body_of(s3, bucket, "dst/sub/b.bin") == files["sub/b.bin"]
    m.wait_until_nothing_staged()


def test_a_second_rsync_from_another_mount_copies_nothing_with_exact_metadata(
    server, bucket, mount, tmp_path
):
    src = tmp_path / "src"
    src.mkdir()
    files = _make_tree(src)
    first = mount(bucket)
    (first.path / "dst").mkdir()
    subprocess.run(["rsync", "-a", f"{src}/", f"{first.path}/dst/"], check=True)
    first.wait_until_nothing_staged()
    first.stop()
    second = mount(bucket, "--exact-metadata")
    assert sorted(os.listdir(second.path / "dst")) == [
        "a.txt",
        "sub",
        "x y.txt",
    ]  # a listing: no stored mtimes
    server.reset()
    rsync = ["rsync", "-a", "--itemize-changes", f"{src}/", f"{second.path}/dst/"]
    itemized = subprocess.run(rsync, capture_output=True, text=True, check=True).stdout.splitlines()
    assert [line for line in itemized if line.startswith(">f")] == [], (
        itemized
    )  # no file sent again
    writes = {"PutObject", "CopyObject", "RenameObject", "CreateMultipartUpload"} & set(
        server.counts()
    )
    assert not writes, server.counts()
    _assert_same_tree(src, second.path / "dst", files)


def test_mkdir_rmdir_unlink(server, bucket, s3, mount):
    mnt = mount(bucket).path
    server.reset()
    os.mkdir(mnt / "d")
    assert s3.head_object(Bucket=bucket, Key="d/")["ContentLength"] == 0
    marker = [r for r in server.requests() if r["op"] == "PutObject"]
    assert marker[0]["headers"].get("If-None-Match") == "*"
    with pytest.raises(FileExistsError):
        os.mkdir(mnt / "d")
    (mnt / "d" / "f").write_bytes(b"1")
    with pytest.raises(OSError) as info:
        os.rmdir(mnt / "d")
    assert info.value.errno == errno.ENOTEMPTY
    os.unlink(mnt / "d" / "f")
    assert "f" not in os.listdir(mnt / "d")
    os.rmdir(mnt / "d")
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "d")


def test_removing_the_last_file_keeps_an_implicit_directory(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="imp/only.txt", Body=b"1")
    mnt = mount(bucket).path
    fd = os.open(mnt / "imp", os.O_RDONLY)  # the kernel holds the directory
    try:
        os.unlink(mnt / "imp" / "only.txt")
        time.sleep(1.2)  # past the metadata TTL: the store alone would say it is gone
        assert os.path.isdir(mnt / "imp") and os.listdir(mnt / "imp") == []
        os.rmdir(mnt / "imp")
    finally:
        os.close(fd)


def test_two_mounts_creating_one_file_the_loser_gets_eexist_and_keeps_its_data(
    server, bucket, s3, mount
):
    a, b = mount(bucket), mount(bucket)
    fa, fb = (
        open(a.path / "race.txt", "wb", buffering=0),
        open(b.path / "race.txt", "wb", buffering=0),
    )
    fa.write(b"from A")
    fb.write(b"from B")
    fa.close()
    with pytest.raises(OSError) as info:
        fb.close()
    assert info.value.errno == errno.EEXIST
    assert body_of(s3, bucket, "race.txt") == b"from A"
    kept = b.staged_files()
    assert [p.read_bytes() for p in kept] == [b"from B"]
    assert "another writer created it first" in b.log()
    wait_for(lambda: str(kept[0]) in b.log())  # logged at release, a moment after close


def test_two_mounts_replacing_one_file_the_loser_gets_estale(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="shared.txt", Body=b"v1")
    a, b = mount(bucket), mount(bucket)
    fa, fb = (
        open(a.path / "shared.txt", "r+b", buffering=0),
        open(b.path / "shared.txt", "r+b", buffering=0),
    )
    fa.write(b"A2")
    fb.write(b"B2")  # both edits are staged on top of v1
    fa.close()
    with pytest.raises(OSError) as info:
        fb.close()
    assert info.value.errno == errno.ESTALE
    assert body_of(s3, bucket, "shared.txt") == b"A2"
    assert [p.read_bytes() for p in b.staged_files()] == [b"B2"]


def test_conflict_409_is_retried(server, bucket, s3, mount):
    mnt = mount(bucket).path
    server.add_fault(
        op="PutObject",
        status=409,
        code="ConditionalRequestConflict",
        message="A conflicting operation occurred.",
        times=1,
    )
    try:
        (mnt / "c.txt").write_bytes(b"eventually")
    finally:
        server.clear_faults()
    assert body_of(s3, bucket, "c.txt") == b"eventually"
    assert (
        len([r for r in server.requests() if r["op"] == "PutObject" and r["key"] == "c.txt"]) == 2
    )


def test_a_later_mount_writes_beside_data_an_earlier_one_kept(server, bucket, s3, mount, tmp_path):
    """Staged files kept after a failed upload stay untouched, and a new mount over the
    same cache directory writes the same file again without tripping over them."""
    cache = tmp_path / "shared-cache"
    first = mount(bucket, "--cache-dir", str(cache))
    suspend_writes(server, bucket=bucket)
    try:
        with pytest.raises(OSError):
            (first.path / "q.txt").write_bytes(b"precious")
    finally:
        server.clear_faults()
    first.stop()
    kept = [k.path for k in find_kept([cache])]
    assert [p.read_bytes() for p in kept] == [b"precious"]
    second = mount(bucket, "--cache-dir", str(cache))
    (second.path / "q.txt").write_bytes(b"again")
    assert s3.get_object(Bucket=bucket, Key="q.txt")["Body"].read() == b"again"
    assert [p.read_bytes() for p in kept] == [b"precious"]
    assert second.proc.poll() is None and "CRITICAL" not in second.log()


def test_small_uploads_do_not_wait_for_100_continue(server, bucket, mount):
    """botocore asks for ``Expect: 100-continue`` on every upload, a round trip each;
    cwfs keeps it only for bodies of 1 MiB or more."""
    mnt = mount(bucket).path
    server.reset()
    (mnt / "small").write_bytes(b"x" * 4096)
    (mnt / "large").write_bytes(b"x" * (2 * MiB))
    expect = {
        r["key"]: r["headers"].get("Expect") for r in server.requests() if r["op"] == "PutObject"
    }
    assert expect == {"small": None, "large": "100-continue"}


def test_failed_multipart_upload_is_aborted(server, bucket, s3, mount):
    m = mount(bucket, "--part-size", "5M", "--max-attempts", "1")
    server.add_fault(
        op="UploadPart", status=500, code="InternalError", message="injected", times=-1, after=1
    )
    try:
        f = open(m.path / "mp.bin", "wb")
        f.write(os.urandom(12 * MiB))
        with pytest.raises(OSError) as info:
            f.close()
    finally:
        server.clear_faults()
    assert info.value.errno == errno.EIO
    assert server.counts().get("AbortMultipartUpload") == 1
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert "mp.bin" not in [o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert len(m.staged_files()) == 1


def test_checksum_off_sends_none(server, bucket, s3, mount):
    mnt = mount(bucket, "--checksum", "off").path
    server.reset()
    (mnt / "plain.txt").write_bytes(b"no crc")
    put = [r for r in server.requests() if r["op"] == "PutObject"][0]
    assert put["checksum"]["algorithm"] is None


def test_writers_wait_for_the_staging_budget(server, bucket, s3, mount):
    m = mount(bucket, "--cache-limit", "2M")
    first = open(m.path / "one.bin", "wb")
    first.write(os.urandom(1536 * 1024))
    first.flush()
    done = threading.Event()

    def second_writer():
        (m.path / "two.bin").write_bytes(os.urandom(1536 * 1024))
        done.set()

    thread = threading.Thread(target=second_writer)
    thread.start()
    assert not done.wait(1.0), "the second writer should wait while the first holds the budget"
    first.close()
    assert done.wait(30)
    thread.join()
    assert "staging is at its limit" in m.log()
    m.wait_until_nothing_staged()


def test_read_only_mount_refuses_every_write_without_requests(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="ro.txt", Body=b"ro")
    s3.put_object(Bucket=bucket, Key="dir/x", Body=b"x")
    mnt = mount(bucket, "--read-only").path
    os.listdir(mnt)
    server.reset()
    attempts = [
        lambda: open(mnt / "new.txt", "wb"),
        lambda: open(mnt / "ro.txt", "r+b"),
        lambda: os.mkdir(mnt / "nd"),
        lambda: os.unlink(mnt / "ro.txt"),
        lambda: os.rmdir(mnt / "dir"),
        lambda: os.chmod(mnt / "ro.txt", 0o600),
        lambda: os.truncate(mnt / "ro.txt", 0),
        lambda: os.utime(mnt / "ro.txt", (1, 1)),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as info:
            attempt()
        assert info.value.errno == errno.EROFS
    writes = {"PutObject", "DeleteObject", "CopyObject", "CreateMultipartUpload", "RenameObject"}
    assert not writes & set(server.counts())


@pytest.mark.parametrize("op, size", [("PutObject", MiB), ("CompleteMultipartUpload", 12 * MiB)])
def test_a_lost_response_is_recognised_as_our_own_success(server, bucket, s3, mount, op, size):
    m = mount(bucket, "--part-size", "5M")
    data = os.urandom(size)
    server.add_fault(
        op=op, status=500, code="InternalError", message="response lost", times=1, phase="after"
    )
    try:
        (m.path / "lost.bin").write_bytes(data)  # close() succeeds: the first attempt had committed
    finally:
        server.clear_faults()
    assert body_of(s3, bucket, "lost.bin") == data
    assert len([r for r in server.requests() if r["op"] == op and r["key"] == "lost.bin"]) == 2
    assert "found its own earlier attempt committed" in m.log()
    m.wait_until_nothing_staged()
