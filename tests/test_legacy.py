"""Everyday tools on a real mount with default options see what they wrote."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time

import pytest

MTIME_NS = 978_307_200_123_456_789  # 2001-01-01T00:00:00.123456789Z


def eventually(check, timeout: float = 5.0) -> None:
    """The kernel sends RELEASE after close() returned: what it triggers comes a moment later."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within 5 s"
        time.sleep(0.02)


def no_objects(s3, bucket):
    return lambda: s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def stat_of(path) -> tuple[int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_mtime_ns


def test_a_listing_after_the_ttl_keeps_the_mode_and_mtime_we_set(server, bucket, mount):
    m = mount(bucket)
    (m.path / "d").mkdir()
    f = m.path / "d" / "f"
    f.write_bytes(b"x\n")
    os.chmod(f, 0o750)
    os.utime(f, ns=(MTIME_NS, MTIME_NS))
    assert stat_of(f) == (0o750, MTIME_NS)
    time.sleep(1.5)  # past the default 1 s TTL: the kernel and the cache ask again
    os.listdir(m.path / "d")
    assert stat_of(f) == (0o750, MTIME_NS)


def test_a_script_made_executable_still_runs_after_the_ttl(server, bucket, mount):
    m = mount(bucket)
    script = m.path / "s.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    os.chmod(script, 0o755)
    assert subprocess.run([str(script)], capture_output=True, text=True).stdout == "ran\n"
    time.sleep(1.5)
    os.listdir(m.path)
    assert subprocess.run([str(script)], capture_output=True, text=True).stdout == "ran\n"


def test_a_new_mount_on_this_machine_knows_the_attributes_without_head_requests(
    server, bucket, mount
):
    first = mount(bucket)
    (first.path / "t").mkdir()
    for i in range(20):
        path = first.path / "t" / f"f{i}"
        path.write_bytes(b"data")
        os.chmod(path, 0o600 + i % 8)
        os.utime(path, ns=(MTIME_NS + i, MTIME_NS + i))
    first.stop()
    second = mount(bucket)
    server.reset()
    out = subprocess.run(["ls", "-l", "--time-style=+%s", str(second.path / "t")], check=True)
    assert out.returncode == 0
    for i in range(20):
        assert stat_of(second.path / "t" / f"f{i}") == (0o600 + i % 8, MTIME_NS + i)
    assert server.counts().get("HeadObject", 0) == 0, server.counts()


def test_another_writers_version_wins_over_what_we_knew(server, bucket, s3, mount):
    m = mount(bucket)
    f = m.path / "f"
    f.write_bytes(b"ours")
    os.chmod(f, 0o700)
    s3.put_object(Bucket=bucket, Key="f", Body=b"theirs, no metadata")
    time.sleep(1.5)
    os.listdir(m.path)
    mode, mtime_ns = stat_of(f)
    assert mode == 0o644 and mtime_ns != MTIME_NS  # the listing's view of the new version
    assert f.read_bytes() == b"theirs, no metadata"


def test_two_shells_appending_to_one_file_keep_every_line(server, bucket, mount):
    m = mount(bucket)
    (m.path / "x" / "y").mkdir(parents=True)
    script = "for p in A B; do (for i in $(seq 100); do echo $p$i >> f; done) & done; wait"
    result = subprocess.run(["sh", "-c", script], cwd=m.path / "x" / "y", capture_output=True)
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
    lines = (m.path / "x" / "y" / "f").read_text().splitlines()
    assert sorted(lines) == sorted(f"{p}{i}" for p in "AB" for i in range(1, 101))
    assert "Stale" not in m.log()


def test_ls_a_shows_dot_and_dotdot_with_their_inodes(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="d/f", Body=b"x")
    m = mount(bucket)
    out = subprocess.run(["ls", "-ai", str(m.path / "d")], capture_output=True, text=True)
    inodes = {
        name: int(number)
        for number, name in (line.split() for line in out.stdout.split("\n") if line)
    }
    assert set(inodes) == {".", "..", "f"}
    assert inodes["."] == os.stat(m.path / "d").st_ino
    assert inodes[".."] == os.stat(m.path).st_ino
    assert os.listdir(m.path / "d") == ["f"]
    assert sorted(
        subprocess.run(["ls", "-a", str(m.path)], capture_output=True, text=True).stdout.split()
    ) == [".", "..", "d"]


def test_a_file_written_then_unlinked_stays_readable_until_closed(server, bucket, s3, mount):
    m = mount(bucket)
    path = m.path / "tmp.txt"
    with open(path, "w+") as f:
        f.write("hi")
        f.flush()
        os.unlink(path)
        assert not path.exists() and "tmp.txt" not in os.listdir(m.path)
        f.seek(0)
        assert f.read() == "hi"
        assert os.fstat(f.fileno()).st_size == 2
        f.write(" there")
        f.truncate(5)
        f.seek(0)
        assert f.read() == "hi th"
    eventually(no_objects(s3, bucket))
    m.wait_until_nothing_staged()


def test_a_reader_keeps_reading_a_file_removed_meanwhile(server, bucket, s3, mount):
    data = os.urandom(3 << 20)
    s3.put_object(Bucket=bucket, Key="r.bin", Body=data)
    m = mount(bucket)
    with open(m.path / "r.bin", "rb") as reader:
        head = reader.read(1 << 20)
        os.unlink(m.path / "r.bin")
        assert not (m.path / "r.bin").exists()
        time.sleep(1.5)  # past the TTL: the name must not come back from the store
        assert not (m.path / "r.bin").exists() and os.listdir(m.path) == []
        assert head + reader.read() == data
        assert os.fstat(reader.fileno()).st_size == len(data)
        assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 1  # deleted at the last close
    eventually(no_objects(s3, bucket))


def test_a_new_file_at_a_name_removed_while_open_is_not_deleted_later(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="log", Body=b"old")
    m = mount(bucket)
    reader = open(m.path / "log", "rb")
    try:
        os.unlink(m.path / "log")
        (m.path / "log").write_bytes(b"new")  # log rotation: a new file, same name
    finally:
        reader.close()
    time.sleep(0.5)  # the reader's RELEASE, which must not delete the new file
    assert s3.get_object(Bucket=bucket, Key="log")["Body"].read() == b"new"
    assert (m.path / "log").read_bytes() == b"new"


def test_names_longer_than_255_bytes_are_refused_before_any_request(server, bucket, s3, mount):
    m = mount(bucket)
    (m.path / "ok").write_bytes(b"x")
    long_name = "n" * 256
    server.reset()
    for attempt in (
        lambda: (m.path / long_name).write_bytes(b"x"),
        lambda: os.mkdir(m.path / long_name),
        lambda: os.rename(m.path / "ok", m.path / long_name),
    ):
        try:
            attempt()
        except OSError as exc:
            assert exc.errno == errno.ENAMETOOLONG, exc
        else:
            raise AssertionError("accepted a 256-byte name")
    writes = {"PutObject", "RenameObject", "CopyObject", "CreateMultipartUpload"}
    assert not writes & set(server.counts()), server.counts()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == ["ok"]
    (m.path / ("n" * 255)).write_bytes(b"longest")
    assert (m.path / ("n" * 255)).read_bytes() == b"longest"


def test_symlinks_are_rclone_links_read_back_with_one_request(server, bucket, s3, mount, tmp_path):
    m = mount(bucket)
    (m.path / "data").mkdir()
    (m.path / "data" / "real.txt").write_bytes(b"content")
    os.symlink("real.txt", m.path / "data" / "link")
    assert os.readlink(m.path / "data" / "link") == "real.txt"
    assert (m.path / "data" / "link").read_bytes() == b"content"
    stored = s3.get_object(Bucket=bucket, Key="data/link.rclonelink")
    assert stored["Body"].read() == b"real.txt"
    assert stat.S_ISLNK(int(stored["Metadata"]["mode"]))
    with pytest.raises(FileExistsError):
        os.symlink("elsewhere", m.path / "data" / "link")
    m.stop()
    fresh = mount(bucket)
    server.reset()
    assert sorted(os.listdir(fresh.path / "data")) == ["link", "real.txt"]
    assert stat.S_ISLNK(os.lstat(fresh.path / "data" / "link").st_mode)
    assert os.lstat(fresh.path / "data" / "link").st_size == len("real.txt")
    assert os.readlink(fresh.path / "data" / "link") == "real.txt"
    assert os.readlink(fresh.path / "data" / "link") == "real.txt"
    counts = server.counts()
    assert counts.get("GetObject") == 1 and counts.get("HeadObject", 0) == 0, counts
    os.rename(fresh.path / "data" / "link", fresh.path / "data" / "moved")
    assert os.readlink(fresh.path / "data" / "moved") == "real.txt"
    os.unlink(fresh.path / "data" / "moved")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == ["data/", "data/real.txt"]


def test_an_s3fs_link_shows_as_a_link(server, bucket, s3, mount):
    mode = str(stat.S_IFLNK | 0o777)
    s3.put_object(Bucket=bucket, Key="s3fs-link", Body=b"target/file", Metadata={"mode": mode})
    m = mount(bucket)
    assert os.readlink(m.path / "s3fs-link") == "target/file"


def test_tar_cp_and_rsync_keep_links(server, bucket, mount, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "f").write_bytes(b"f")
    os.symlink("sub/f", src / "rel")
    os.symlink("/etc/hostname", src / "abs")
    tarball = tmp_path / "t.tar"
    subprocess.run(["tar", "cf", str(tarball), "-C", str(src), "."], check=True)
    m = mount(bucket)
    for name, command in {
        "tar": ["tar", "xf", str(tarball), "-C", "{dst}"],
        "cp": ["cp", "-a", f"{src}/.", "{dst}/"],
        "rsync": ["rsync", "-a", f"{src}/", "{dst}/"],
    }.items():
        dst = m.path / name
        dst.mkdir()
        result = subprocess.run([c.format(dst=dst) for c in command], capture_output=True)
        assert result.returncode == 0, result.stderr.decode()
        assert os.readlink(dst / "rel") == "sub/f" and os.readlink(dst / "abs") == "/etc/hostname"
        assert (dst / "rel").read_bytes() == b"f"


def run(*command: str, cwd=None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result


def test_git_status_is_clean_after_the_ttl(server, bucket, mount):
    m = mount(bucket)
    repo = m.path / "repo"
    repo.mkdir()
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com"]
    run(*git, "init", "-q", cwd=repo)
    (repo / "a.txt").write_text("a\n")
    (repo / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(repo / "run.sh", 0o755)
    run(*git, "add", ".", cwd=repo)
    run(*git, "commit", "-q", "-m", "first", cwd=repo)
    time.sleep(1.5)
    assert run(*git, "status", "--porcelain", cwd=repo).stdout == ""
    assert run(*git, "log", "--oneline", cwd=repo).stdout.strip().endswith("first")


def test_tar_c_of_a_tree_just_extracted_sees_no_change(server, bucket, mount, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(20):
        (src / "d" / f"f{i}").write_bytes(os.urandom(1000 + i))
        os.utime(src / "d" / f"f{i}", ns=(MTIME_NS + i, MTIME_NS + i))
    tarball = tmp_path / "t.tar"
    run("tar", "--format=posix", "-cf", str(tarball), "-C", str(src), ".")
    m = mount(bucket)
    (m.path / "x").mkdir()
    run("tar", "xf", str(tarball), "-C", str(m.path / "x"))
    result = run("tar", "cf", str(tmp_path / "again.tar"), "-C", str(m.path / "x"), ".")
    assert result.stderr == ""
    for i in range(20):
        assert os.stat(m.path / "x" / "d" / f"f{i}").st_mtime_ns == MTIME_NS + i


def transferred(stats: str) -> int:
    line = next(x for x in stats.splitlines() if "regular files transferred" in x)
    return int(line.rsplit(":", 1)[1].replace(",", ""))


def test_a_second_rsync_copies_nothing_also_after_a_remount(server, bucket, mount, tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for i in range(30):
        (src / "d" / f"f{i}").write_bytes(os.urandom(100 + i))
    first = mount(bucket)
    assert transferred(run("rsync", "-a", "--stats", f"{src}/", f"{first.path}/").stdout) == 30
    assert transferred(run("rsync", "-a", "--stats", f"{src}/", f"{first.path}/").stdout) == 0
    time.sleep(1.5)
    assert transferred(run("rsync", "-a", "--stats", f"{src}/", f"{first.path}/").stdout) == 0
    first.stop()
    second = mount(bucket)
    server.reset()
    assert transferred(run("rsync", "-a", "--stats", f"{src}/", f"{second.path}/").stdout) == 0
    assert server.counts().get("HeadObject", 0) == 0, server.counts()


def test_sqlite_and_zip_append_work(server, bucket, mount):
    import sqlite3
    import zipfile

    m = mount(bucket)
    db = sqlite3.connect(m.path / "t.db")
    db.execute("CREATE TABLE t (n INTEGER)")
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    db.commit()
    db.execute("INSERT INTO t VALUES (100)")
    db.commit()
    db.close()
    db = sqlite3.connect(m.path / "t.db")
    assert db.execute("SELECT count(*), sum(n) FROM t").fetchone() == (101, 5050)
    db.close()
    with zipfile.ZipFile(m.path / "a.zip", "w") as archive:
        archive.writestr("one.txt", "1")
    with zipfile.ZipFile(m.path / "a.zip", "a") as archive:
        archive.writestr("two.txt", "2")
    with zipfile.ZipFile(m.path / "a.zip") as archive:
        assert archive.namelist() == ["one.txt", "two.txt"] and archive.read("two.txt") == b"2"


USER = 4321  # a second user, for the kernel's permission checks


def as_user(*command: str) -> subprocess.CompletedProcess[str]:
    setpriv = ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups"]
    return subprocess.run([*setpriv, *command], capture_output=True, text=True)


def reachable_by_others(path) -> None:
    """pytest's temporary directories are 0700: let the second user walk to the mount."""
    for directory in [path, *path.parents]:
        if directory == directory.parent:
            break
        os.chmod(directory, os.stat(directory).st_mode | 0o011)


def test_chown_is_stored_and_the_kernel_honours_it_for_a_second_user(server, bucket, s3, mount):
    m = mount(bucket, "--allow-other")
    reachable_by_others(m.path.parent)
    private = m.path / "private.txt"
    private.write_text("secret")
    os.chmod(private, 0o600)
    assert as_user("cat", str(private)).returncode != 0  # root's file, mode 0600
    os.chown(private, USER, USER)
    assert (os.stat(private).st_uid, os.stat(private).st_gid) == (USER, USER)
    assert as_user("cat", str(private)).stdout == "secret"
    metadata = s3.head_object(Bucket=bucket, Key="private.txt")["Metadata"]
    assert (metadata["uid"], metadata["gid"]) == (str(USER), str(USER))
    time.sleep(1.5)
    os.listdir(m.path)  # a listing after the TTL keeps the owner
    assert os.stat(private).st_uid == USER
    m.stop()
    again = mount(bucket, "--allow-other")
    os.listdir(again.path)
    assert os.stat(again.path / "private.txt").st_uid == USER
    assert as_user("cat", str(again.path / "private.txt")).stdout == "secret"


def test_mkfifo_makes_a_working_fifo_that_stays_one(server, bucket, s3, mount):
    m = mount(bucket)
    fifo = m.path / "pipe"
    os.mkfifo(fifo, 0o640)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_IMODE(os.stat(fifo).st_mode) == 0o640
    mode = int(s3.head_object(Bucket=bucket, Key="pipe")["Metadata"]["mode"])
    assert stat.S_ISFIFO(mode)
    writer = subprocess.Popen(["sh", "-c", f"echo through > {fifo}"])
    assert fifo.read_text() == "through\n"
    assert writer.wait(10) == 0
    os.chmod(fifo, 0o600)
    time.sleep(1.5)
    os.listdir(m.path)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and stat.S_IMODE(os.stat(fifo).st_mode) == 0o600
    os.mknod(m.path / "sock", stat.S_IFSOCK | 0o600)
    assert stat.S_ISSOCK(os.stat(m.path / "sock").st_mode)
    os.unlink(fifo)
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == ["sock"]


def test_exact_metadata_stats_ahead_of_ls_l(server, bucket, s3, mount):
    """ls -l stats entries one at a time; with --exact-metadata their HeadObjects are
    already in flight, together, by then (the first 40 held 1 s here, then retried)."""
    server.seed(bucket, [{"key": f"d/f{i:03d}", "size": i} for i in range(100)])
    s3.put_object(Bucket=bucket, Key="d/f007", Body=b"x" * 7, Metadata={"mode": str(0o100600)})
    m = mount(bucket, "--exact-metadata")
    os.listdir(m.path)
    server.reset()
    server.add_fault(op="HeadObject", bucket=bucket, status=503, code="SlowDown", delay=1, times=40)
    listing = run("ls", "-l", str(m.path / "d")).stdout
    server.clear_faults()
    assert "-rw-------" in next(line for line in listing.splitlines() if line.endswith("f007"))
    heads = [r for r in server.requests() if r["op"] == "HeadObject"]
    assert len({r["key"] for r in heads}) == 100 and len(heads) == 140, "each once, 40 retried"
    first = min(r["time"] for r in heads)
    assert sum(r["time"] < first + 0.5 for r in heads) >= 16, "sent one after the other"


def test_stat_ahead_answers_wait_for_their_stat_past_the_ttl(server, bucket, mount):
    """Stat-ahead ran more than a TTL ahead of a slow reader of the directory: its
    answers are used then, not fetched again with the directory listed anew."""
    server.seed(bucket, [{"key": f"d/f{i:04d}", "size": i} for i in range(1200)])
    m = mount(bucket, "--exact-metadata", "--metadata-ttl", "1")
    with os.scandir(m.path / "d") as entries:
        next(entries)  # the kernel reads a first buffer of entries
        deadline = time.monotonic() + 60
        while server.counts().get("HeadObject", 0) < 1200 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2.5)  # the listing's entries and the answers' TTL have expired
        server.reset()
        sizes = {int(entry.name[1:]): entry.stat().st_size for entry in entries}  # as ls -l
    assert len(sizes) > 1000 and all(number == size for number, size in sizes.items())
    counts = server.counts()
    assert counts.get("HeadObject", 0) == 0 and counts.get("ListObjectsV2", 0) <= 1, counts


def test_directory_times_follow_their_entries(server, bucket, mount):
    m = mount(bucket)
    before = time.time_ns()
    (m.path / "d").mkdir()
    made = os.stat(m.path / "d").st_mtime_ns
    assert made >= before, "a new directory shows when it was made, not the mount time"
    for change in (
        lambda: (m.path / "d" / "f").write_bytes(b"x"),
        lambda: os.rename(m.path / "d" / "f", m.path / "d" / "g"),
        lambda: os.symlink("g", m.path / "d" / "l"),
        lambda: os.unlink(m.path / "d" / "l"),
        lambda: os.mkdir(m.path / "d" / "sub"),
        lambda: os.rmdir(m.path / "d" / "sub"),
    ):
        earlier = os.stat(m.path / "d").st_mtime_ns
        time.sleep(0.01)
        change()
        assert os.stat(m.path / "d").st_mtime_ns > earlier


def test_directory_modes_and_owners_are_stored_and_honoured(server, bucket, s3, mount):
    m = mount(bucket, "--allow-other")
    reachable_by_others(m.path.parent)
    os.mkdir(m.path / "private", 0o751)
    assert stat.S_IMODE(os.stat(m.path / "private").st_mode) == 0o751
    assert int(s3.head_object(Bucket=bucket, Key="private/")["Metadata"]["mode"]) & 0o7777 == 0o751
    shared = m.path / "shared"
    shared.mkdir()
    assert as_user("touch", str(shared / "mine")).returncode != 0  # root's 0755 directory
    os.chmod(shared, 0o1777)  # world-writable and sticky, as /tmp
    assert as_user("touch", str(shared / "mine")).returncode == 0
    (shared / "roots").write_text("root's")
    assert as_user("rm", "-f", str(shared / "roots")).returncode != 0  # sticky: not theirs
    assert as_user("rm", str(shared / "mine")).returncode == 0
    implicit = m.path / "implicit"
    s3.put_object(Bucket=bucket, Key="implicit/f", Body=b"x")  # a directory without a marker
    os.chown(implicit, USER, USER)
    assert os.stat(implicit).st_uid == USER
    assert as_user("touch", str(implicit / "g")).returncode == 0
    time.sleep(1.5)
    os.listdir(m.path)  # after the TTL, a listing keeps what the markers say
    modes = {p: stat.S_IMODE(os.stat(m.path / p).st_mode) for p in ("private", "shared")}
    assert modes == {"private": 0o751, "shared": 0o1777}
    assert os.stat(implicit).st_uid == USER


def test_ctime_follows_status_changes_while_mtime_stays(server, bucket, mount):
    m = mount(bucket)
    f = m.path / "f"
    f.write_bytes(b"x")
    os.utime(f, ns=(MTIME_NS, MTIME_NS))  # as tar x does: an old mtime
    st = os.stat(f)
    assert st.st_mtime_ns == MTIME_NS and st.st_ctime_ns > MTIME_NS
    for change in (lambda: os.chmod(f, 0o600), lambda: os.rename(f, m.path / "g")):
        before = os.stat(m.path / ("g" if (m.path / "g").exists() else "f")).st_ctime_ns
        time.sleep(0.01)
        change()
        after = os.stat(m.path / ("g" if (m.path / "g").exists() else "f"))
        assert after.st_ctime_ns > before and after.st_mtime_ns == MTIME_NS
