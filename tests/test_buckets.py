"""Issue 15, every bucket of an account in one mount (``--all-buckets``), through real
mounts against the embedded server with three buckets of our own (the server holds
other tests' buckets too: each check is about ours)."""

from __future__ import annotations

import errno
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import cwfs_env, wait_for

from cwfs.attrs import MTIME_KEY
from cwfs.mounthelper import mount_arguments
from cwfs.mountrecords import find

FAR = "US-CENTRAL-05A"  # an availability zone other than the server's default region
_names = itertools.count()


@pytest.fixture
def three(server, s3) -> list[str]:
    """Three fresh buckets, the last in another availability zone."""
    stem = f"every-{os.getpid()}-{next(_names)}"
    names = [f"{stem}-a", f"{stem}-b", f"{stem}-far"]
    for name in names[:2]:
        s3.create_bucket(Bucket=name)
    s3.create_bucket(Bucket=names[2], CreateBucketConfiguration={"LocationConstraint": FAR})
    for name in names:
        s3.put_object(Bucket=name, Key="dir/hello.txt", Body=f"hello from {name}".encode())
    return names


def every_bucket(mount, *args: str):
    return mount("", "--all-buckets", *args)


def requests_to(server, bucket: str) -> list[dict]:
    """The requests about ``bucket``, but GetBucketLocation (asked before its region is
    known: signed for the mount's)."""
    return [
        r for r in server.requests() if r["bucket"] == bucket and r["op"] != "GetBucketLocation"
    ]


def test_the_root_lists_the_buckets_and_each_is_its_own_bucket(server, s3, mount, three):
    first, second, far = three
    mounted = every_bucket(mount)
    server.reset()
    listed = os.listdir(mounted.path)
    assert [os.stat(mounted.path / name).st_mode & 0o170000 for name in three] == [0o040000] * 3
    assert server.counts() == {"ListBuckets": 1}  # no bucket's filesystem built for that
    assert set(three) <= set(listed)
    assert sorted(listed) == sorted(b["Name"] for b in s3.list_buckets()["Buckets"])
    for name in three:
        assert (mounted.path / name / "dir" / "hello.txt").read_text() == f"hello from {name}"
    (mounted.path / second / "dir" / "new.txt").write_text("written")
    assert s3.get_object(Bucket=second, Key="dir/new.txt")["Body"].read() == b"written"
    put = [r for r in requests_to(server, second) if r["op"] == "PutObject"]
    assert [r["headers"].get("If-None-Match") for r in put] == ["*"]
    assert server.counts()["GetBucketLocation"] == 3  # once per bucket, when first used
    assert {r["region"] for r in requests_to(server, far)} == {FAR}
    assert {r["region"] for r in requests_to(server, first)} == {"us-east-1"}


def test_mv_is_one_rename_within_a_bucket_and_a_copy_between_two(server, s3, mount, three):
    first, second, _ = three
    mounted = every_bucket(mount)
    source = mounted.path / first / "dir" / "hello.txt"
    assert source.exists()
    server.reset()
    os.rename(source, mounted.path / first / "moved.txt")
    assert server.counts().get("RenameObject") == 1
    with pytest.raises(OSError) as crossed:
        os.rename(mounted.path / first / "moved.txt", mounted.path / second / "moved.txt")
    assert crossed.value.errno == errno.EXDEV
    done = subprocess.run(
        ["mv", str(mounted.path / first / "moved.txt"), str(mounted.path / second / "moved.txt")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    body = s3.get_object(Bucket=second, Key="moved.txt")["Body"].read()
    assert body == f"hello from {first}".encode()
    assert "Contents" not in s3.list_objects_v2(Bucket=first, Prefix="moved.txt")


def test_buckets_are_neither_made_nor_removed_through_the_root(server, s3, mount, three):
    first = three[0]
    mounted = every_bucket(mount)
    server.reset()
    attempts = [
        lambda: os.mkdir(mounted.path / "a-new-bucket"),
        lambda: os.rmdir(mounted.path / first),
        lambda: os.rename(mounted.path / first, mounted.path / "renamed-bucket"),
        lambda: (mounted.path / "file-at-root").write_text("x"),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as refused:
            attempt()
        assert refused.value.errno == errno.EPERM
    assert not {"CreateBucket", "DeleteBucket", "PutObject"} & set(server.counts())
    assert first in [b["Name"] for b in s3.list_buckets()["Buckets"]]
    assert "cannot make a directory at the root: buckets are made and deleted elsewhere" in (
        mounted.log()
    )


def test_a_bucket_made_elsewhere_shows_after_the_ttl(server, s3, mount, three):
    mounted = every_bucket(mount, "--metadata-ttl", "1")
    assert three[0] in os.listdir(mounted.path)
    late = f"{three[0]}-late"
    s3.create_bucket(Bucket=late)
    wait_for(lambda: late in os.listdir(mounted.path), timeout=10)
    s3.delete_bucket(Bucket=late)
    wait_for(lambda: late not in os.listdir(mounted.path), timeout=10)


def test_stats_and_warm_records_know_every_bucket(server, s3, mount, three):
    first, second, _ = three
    mounted = every_bucket(mount)
    command = [sys.executable, "-m", "cwfs", "stats", str(mounted.path)]
    unopened = subprocess.run(command, env=cwfs_env(server), capture_output=True, text=True)
    assert unopened.stdout.startswith(f"cwfs mount of every bucket on {mounted.path}, up ")
    assert "uploads: 0 in flight, 0 completed" in unopened.stdout  # no bucket opened yet
    server.reset()
    assert (mounted.path / first / "dir" / "hello.txt").read_text().startswith("hello")
    (mounted.path / second / "x.txt").write_text("x")
    done = subprocess.run(
        [*command, "--json"], env=cwfs_env(server), capture_output=True, text=True, timeout=30
    )
    figures = json.loads(done.stdout)
    counted = {
        op: sum(outcomes.values()) for op, outcomes in figures["requests"]["primary"].items()
    }
    assert counted == server.counts()
    assert figures["bucket"] == "" and figures["uploads"]["completed"] == 1
    found = find(mounted.path / second / "x.txt")
    assert found is not None and (found[0].bucket, found[1]) == (second, "x.txt")
    assert find(mounted.path) is None  # the root is no bucket's


def test_all_buckets_in_fstab_names_no_bucket():
    assert mount_arguments(["cwfs", "/m", "-o", "all_buckets,read_only"]) == [
        "mount", "/m", "--all-buckets", "--read-only",
    ]  # fmt: skip


def test_rejected_credentials_fail_the_mount_with_a_reason(server, tmp_path):
    (tmp_path / "m").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "cwfs", "mount", "--all-buckets", str(tmp_path / "m"),
         "--endpoint", server.url, "--addressing-style", "path",
         "--log-file", str(tmp_path / "log")],
        env=cwfs_env(server, SECRET_ACCESS_KEY="wrong-secret"),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert "the credentials were rejected" in done.stderr and "wrong-secret" not in done.stderr
    assert not Path(tmp_path / "m").is_mount()


def test_each_bucket_reads_through_lota_as_a_mount_of_it_would(server, s3, mount, three):
    first, second, _ = three
    mounted = every_bucket(mount, "--lota-endpoint", server.lota_url, "--lota", "on")
    server.reset()
    for name in (first, second):
        assert (mounted.path / name / "dir" / "hello.txt").read_text() == f"hello from {name}"
    through_lota = [r for r in server.requests() if r["endpoint"] == "lota"]
    assert {r["bucket"] for r in through_lota if r["op"] == "GetObject"} == {first, second}
    assert "GetObject" not in server.counts()  # none from the primary endpoint


def test_a_file_keeps_its_page_cache_only_while_its_own_bucket_says_unchanged(s3, mount, three):
    """Two buckets holding one key: opening one bucket's file must not vouch for the
    other's page cache (the content of the same ETag there may be new to the kernel)."""
    first, second, _ = three
    same_mtime = {MTIME_KEY: "1700000000.000000000"}  # equal size and mtime: no invalidation
    s3.put_object(Bucket=first, Key="k", Body=b"first", Metadata=same_mtime)
    s3.put_object(Bucket=second, Key="k", Body=b"other", Metadata=same_mtime)
    mounted = every_bucket(mount, "--metadata-ttl", "1")
    assert (mounted.path / first / "k").read_bytes() == b"first"  # now in the page cache
    for bucket in (first, second):  # elsewhere: both now hold the same content and ETag
        s3.put_object(Bucket=bucket, Key="k", Body=b"later", Metadata=same_mtime)
    time.sleep(1.5)  # past the metadata TTL: the next opens see the new ETag
    assert (mounted.path / second / "k").read_bytes() == b"later"
    assert (mounted.path / first / "k").read_bytes() == b"later"


def test_a_failure_on_an_open_file_is_logged_under_its_bucket(s3, mount, three):
    """The log line of a failed flush names the file as the mount shows it, bucket first
    (the key alone does not say which bucket refused)."""
    first = three[0]
    mounted = every_bucket(mount)
    f = open(mounted.path / first / "dir" / "hello.txt", "r+b", buffering=0)  # noqa: SIM115
    f.write(b"ours")
    s3.put_object(Bucket=first, Key="dir/hello.txt", Body=b"theirs")
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.ESTALE
    wait_for(lambda: "the data is kept in" in mounted.log())
    lines = [x for x in mounted.log().splitlines() if " flush " in x and "-> ESTALE" in x]
    assert len(lines) == 1 and f" flush '{first}/dir/hello.txt': " in lines[0], mounted.log()
    assert "(PutObject 'dir/hello.txt', PreconditionFailed, HTTP 412" in lines[0]


def test_the_buckets_share_the_mounts_limits(server, s3, mount, three):
    """--cache-limit and --max-memory are the process's: a writer in one bucket waits
    while a file in another holds the staging budget, and stats show each limit once."""
    first, second, _ = three
    mounted = every_bucket(mount, "--cache-limit", "2M", "--max-memory", "64M")
    holder = open(mounted.path / first / "one.bin", "wb")  # noqa: SIM115 - closed below
    holder.write(os.urandom(1536 * 1024))
    holder.flush()
    done = threading.Event()

    def second_writer() -> None:
        (mounted.path / second / "two.bin").write_bytes(os.urandom(1536 * 1024))
        done.set()

    writer = threading.Thread(target=second_writer)
    writer.start()
    wait_for(lambda: "staging is at its limit" in mounted.log(), timeout=10)
    assert not done.is_set()
    holder.close()
    assert done.wait(30)
    writer.join()
    figures = json.loads(
        subprocess.run(
            [sys.executable, "-m", "cwfs", "stats", str(mounted.path), "--json"],
            env=cwfs_env(server), capture_output=True, text=True, timeout=30, check=True,
        ).stdout
    )  # fmt: skip
    assert figures["staging_limit_bytes"] == 2 << 20
    assert figures["read_ahead_memory"]["limit"] == 64 << 20
    assert figures["uploads"]["completed"] == 2


def test_a_bucket_whose_region_cannot_be_read_is_signed_for_the_mounts(server, mount, three):
    """GetBucketLocation refused: the bucket is still used, signed for the mount's region,
    and the warning says which request failed."""
    first = three[0]
    server.add_fault(op="GetBucketLocation", bucket=first, status=403, code="AccessDenied")
    try:
        mounted = every_bucket(mount)
        assert (mounted.path / first / "dir" / "hello.txt").read_text() == f"hello from {first}"
    finally:
        server.clear_faults()
    lines = [x for x in mounted.log().splitlines() if "cannot read the region" in x]
    assert len(lines) == 1, mounted.log()
    assert f"bucket {first!r} (GetBucketLocation {first!r}, AccessDenied, HTTP 403" in lines[0]
    assert {r["region"] for r in requests_to(server, first)} == {"us-east-1"}
