"""The metadata cache through a real mount: hits cost nothing, own changes show at once."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time

from cwfs.server.seed import pattern


def ls_l(path) -> list[str]:
    out = subprocess.run(["ls", "-l", str(path)], capture_output=True, text=True, check=True).stdout
    return sorted(line.split()[-1] for line in out.splitlines()[1:])


def test_second_ls_within_the_ttl_makes_no_request(server, bucket, mount):
    server.seed(bucket, [{"key": f"d/f{i}", "size": i} for i in range(50)])
    mnt = mount(bucket, "--metadata-ttl", "30").path
    first = ls_l(mnt / "d")
    server.reset()
    assert ls_l(mnt / "d") == first
    assert server.counts() == {}


def test_own_changes_are_visible_at_once(server, bucket, s3, mount):
    server.seed(bucket, [{"key": "d/old", "size": 1}])
    mnt = mount(bucket, "--metadata-ttl", "indefinite").path
    assert ls_l(mnt / "d") == ["old"]
    (mnt / "d" / "new").write_bytes(b"new")
    assert ls_l(mnt / "d") == ["new", "old"]
    os.rename(mnt / "d" / "old", mnt / "d" / "renamed")
    assert ls_l(mnt / "d") == ["new", "renamed"]
    os.unlink(mnt / "d" / "new")
    assert ls_l(mnt / "d") == ["renamed"]
    os.mkdir(mnt / "d" / "sub")
    assert ls_l(mnt / "d") == ["renamed", "sub"]
    assert not (mnt / "d" / "old").exists() and (mnt / "d" / "renamed").read_bytes() == pattern(
        "d/old", 1
    )


def test_another_clients_change_is_visible_after_the_ttl(server, bucket, s3, mount):
    server.seed(bucket, [{"key": "d/a", "size": 1}])
    mnt = mount(bucket, "--metadata-ttl", "1", "--negative-ttl", "1").path
    assert ls_l(mnt / "d") == ["a"]
    assert not (mnt / "d" / "b").exists()
    s3.put_object(Bucket=bucket, Key="d/b", Body=b"from elsewhere")
    s3.put_object(Bucket=bucket, Key="d/a", Body=b"changed elsewhere")
    time.sleep(1.5)
    assert ls_l(mnt / "d") == ["a", "b"]
    assert (mnt / "d" / "b").read_bytes() == b"from elsewhere"
    assert (mnt / "d" / "a").read_bytes() == b"changed elsewhere"


def test_negative_lookups_are_cached(server, bucket, mount):
    mnt = mount(bucket, "--negative-ttl", "30").path
    server.reset()
    for _ in range(5):
        assert not (mnt / "missing").exists()
    counts = server.counts()
    # Once, then cached: the listing below missing/, the file, and a link of that name.
    heads = [r["key"] for r in server.requests() if r["op"] == "HeadObject"]
    assert heads == ["missing", "missing.rclonelink"] and counts.get("ListObjectsV2") == 1, counts


def test_find_over_a_tree_lists_it_flat(server, bucket, mount):
    server.seed(
        bucket,
        [{"key": f"tree/dir{d:02d}/file{f:03d}", "size": 1} for d in range(30) for f in range(100)],
    )
    mnt = mount(bucket, "--metadata-ttl", "60").path
    server.reset()
    found = subprocess.run(
        ["find", str(mnt / "tree"), "-type", "f"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert len(found) == 3000
    counts = server.counts()
    assert counts.get("ListObjectsV2", 0) <= 5, counts
    assert counts.get("HeadObject", 0) <= 1, counts
    server.reset()
    assert sum(len(files) for _, _, files in os.walk(mnt / "tree")) == 3000  # a second walk is free
    assert server.counts() == {}


def test_walk_of_a_tree_larger_than_one_flat_pass(server, bucket, mount):
    """Over 10,000 objects: the top falls back to a delimited listing, nothing is lost."""
    server.seed(
        bucket, [{"key": f"big/d{d}/f{f:04d}", "size": 0} for d in range(12) for f in range(1000)]
    )
    mnt = mount(bucket, "--metadata-ttl", "60").path
    server.reset()
    total = sum(len(files) for _, _, files in os.walk(mnt / "big"))
    assert total == 12_000
    assert (
        server.counts().get("ListObjectsV2", 0) <= 12 + 10 + 2
    )  # ~N/1000, plus the one bounded flat pass


def test_unchanged_objects_keep_the_page_cache(server, bucket, mount):
    server.seed(bucket, [{"key": "data.bin", "size": 4 << 20}])
    mnt = mount(bucket, "--metadata-ttl", "60").path
    digest = hashlib.sha256((mnt / "data.bin").read_bytes()).hexdigest()
    server.reset()
    assert hashlib.sha256((mnt / "data.bin").read_bytes()).hexdigest() == digest
    assert server.counts().get("GetObject", 0) == 0, (
        "the second pass should come from the page cache"
    )


def test_direct_io_bypasses_the_page_cache(server, bucket, mount):
    server.seed(bucket, [{"key": "data.bin", "size": 40 << 20}])
    mnt = mount(bucket, "--metadata-ttl", "60", "--direct-io").path
    expected = pattern("data.bin", 40 << 20)
    with open(mnt / "data.bin", "rb", buffering=0) as f:
        assert f.read() == expected
        server.reset()
        f.seek(0)
        assert f.read() == expected  # the kernel kept nothing: read again from the store
    assert server.counts().get("GetObject", 0) > 0
    with open(mnt / "data.bin", "rb") as f:  # small reads reach cwfs as they are, from read-ahead
        assert b"".join(iter(lambda: f.read(8192), b"")) == expected


def test_creating_files_in_a_new_directory_costs_one_put_each(server, bucket, mount):
    mnt = mount(bucket, "--metadata-ttl", "30").path
    os.mkdir(mnt / "fresh")
    server.reset()
    for i in range(20):
        (mnt / "fresh" / f"f{i}").write_bytes(b"x")
    assert server.counts() == {"PutObject": 20}  # lookups answered by the (empty) listing
    assert ls_l(mnt / "fresh") == sorted(f"f{i}" for i in range(20))
    assert server.counts() == {"PutObject": 20}


def test_creating_many_files_in_an_existing_directory_lists_it_once(server, bucket, mount):
    server.seed(bucket, [{"key": "out/.keep", "size": 0}, {"key": "out/existing", "size": 5}])
    mnt = mount(bucket, "--metadata-ttl", "30").path
    server.reset()
    for i in range(50):
        (mnt / "out" / f"f{i:02d}").write_bytes(b"x")
    counts = server.counts()
    # The directory's own lookup and the first few misses go to the store, then one listing answers the rest.
    assert (
        counts["PutObject"] == 50
        and counts.get("HeadObject", 0) <= 4
        and counts["ListObjectsV2"] <= 5
    ), counts
    assert sorted(os.listdir(mnt / "out")) == sorted(
        [".keep", "existing"] + [f"f{i:02d}" for i in range(50)]
    )
