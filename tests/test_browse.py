"""Browsing a bucket through a real mount: listings, stat, ls, find, odd keys, requests."""

from __future__ import annotations

import base64
import errno
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from cwfs.server.seed import pattern

TREE = {
    "top.txt": b"top\n",
    "docs/readme.md": b"# hello\n",
    "docs/guide/intro.md": b"intro",
    "docs/guide/deep/er/file.bin": b"\x00\x01\x02",
    "marked/": b"",  # an explicit, empty directory marker
    "marked-full/": b"",
    "marked-full/inside.txt": b"in",
    "implicit/only/child.txt": b"child",
}


@pytest.fixture
def tree(server, bucket):
    server.seed(
        bucket, [{"key": k, "body_b64": base64.b64encode(v).decode()} for k, v in TREE.items()]
    )
    return bucket


def test_listdir_stat_and_find_show_the_tree(tree, mount):
    mnt = mount(tree).path
    assert sorted(os.listdir(mnt)) == ["docs", "implicit", "marked", "marked-full", "top.txt"]
    assert sorted(os.listdir(mnt / "docs")) == ["guide", "readme.md"]
    assert os.listdir(mnt / "marked") == []
    assert os.listdir(mnt / "marked-full") == ["inside.txt"]
    assert stat.S_ISDIR(os.stat(mnt / "implicit" / "only").st_mode)
    st = os.stat(mnt / "docs" / "guide" / "intro.md")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 5
    assert (mnt / "docs/guide/deep/er/file.bin").read_bytes() == b"\x00\x01\x02"

    found = subprocess.run(
        ["find", str(mnt)], capture_output=True, text=True, check=True
    ).stdout.split()
    relative = sorted(os.path.relpath(p, mnt) for p in found)
    expected = {"."}
    for key in TREE:
        parts = key.rstrip("/").split("/")
        expected.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    assert relative == sorted(expected)

    listing = subprocess.run(
        ["ls", "-l", str(mnt / "docs")], capture_output=True, text=True, check=True
    ).stdout
    assert "readme.md" in listing and listing.splitlines()[-1].startswith("-rw-r--r--")


def test_missing_names_are_enoent(tree, mount):
    mnt = mount(tree).path
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "nope")
    with pytest.raises(FileNotFoundError):
        os.stat(mnt / "docs" / "nope" / "deeper")
    with pytest.raises(NotADirectoryError):
        os.listdir(mnt / "top.txt")


def ls_l_counts(server, directory: Path, files: int) -> dict[str, int]:
    """``ls -l`` of ``directory``, which holds ``files`` files of sizes i % 7 (checked:
    the sizes come from the listing); the requests it cost."""
    server.reset()
    out = subprocess.run(
        ["ls", "-l", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    lines = [line for line in out.splitlines() if line.startswith("-")]
    assert len(lines) == files
    assert lines[3].split()[4] == "3"
    return server.counts()


def test_ls_l_of_2500_files_is_three_lists_and_no_head(server, bucket, mount):
    """Cold, the directory's own lookup included: it fetches the first page."""
    server.seed(bucket, [{"key": f"big/file-{i:05d}.dat", "size": i % 7} for i in range(2500)])
    mnt = mount(bucket, "--metadata-ttl", "60").path
    counts = ls_l_counts(server, mnt / "big", 2500)
    assert counts.get("ListObjectsV2") == 3, counts
    assert counts.get("HeadObject", 0) == 0, counts
    assert counts.get("GetObject", 0) == 0, counts


def test_ls_l_of_50000_names_is_50_lists_and_no_head_with_the_default_ttl(server, bucket, mount):
    """Issue 14: listing 50,000 names outlasts the 1 s TTL; the stats that follow each
    readdir batch, and the kernel's lookups of the directory, are answered from the
    cache (it took 6,639 ListObjectsV2 and 6,249 HeadObject)."""
    server.seed(bucket, [{"key": f"big/f{i:05d}", "size": i % 7} for i in range(50_000)])
    counts = ls_l_counts(server, mount(bucket).path / "big", 50_000)
    assert counts.get("ListObjectsV2") == 50, counts
    assert counts.get("HeadObject", 0) == 0, counts


def test_a_cold_path_walk_through_a_small_tree_is_one_list(tree, server, mount):
    """The lookup of ``docs`` lists its subtree (under 1,000 keys) whole: every lookup
    and listing below it is then answered from that one page."""
    mnt = mount(tree, "--metadata-ttl", "60").path
    server.reset()
    assert (mnt / "docs" / "guide" / "deep" / "er" / "file.bin").read_bytes() == TREE[
        "docs/guide/deep/er/file.bin"
    ]
    assert not (mnt / "docs" / "guide" / "absent").exists()
    assert sorted(os.listdir(mnt / "docs" / "guide")) == ["deep", "intro.md"]
    assert server.counts() == {"ListObjectsV2": 1, "GetObject": 1}


def test_a_lookup_among_many_files_is_one_round_trip(server, bucket, mount):
    """Past a directory's first page a name is most likely a file: HeadObject and a
    one-key listing go together, not one after the other."""
    server.seed(bucket, [{"key": f"many/f{i:04d}", "size": 1} for i in range(1200)])
    mnt = mount(bucket, "--metadata-ttl", "60").path
    assert (mnt / "many").is_dir()
    server.reset()
    # Each held 1 s (then retried): sent one after the other, in either order, the
    # second would arrive a second after the first.
    server.add_fault(op="ListObjectsV2", bucket=bucket, delay=1)
    server.add_fault(op="HeadObject", bucket=bucket, delay=1)
    assert os.stat(mnt / "many" / "f1100").st_size == 1
    first = {}
    for request in server.requests():
        first.setdefault(request["op"], request["time"])
    assert abs(first["HeadObject"] - first["ListObjectsV2"]) < 0.5, "sent one after the other"
    server.clear_faults()
    server.reset()
    assert os.stat(mnt / "many" / "f1101").st_size == 1
    assert server.counts() == {"HeadObject": 1, "ListObjectsV2": 1}


def test_a_first_page_from_before_our_change_is_not_reused(server, bucket, mount):
    server.seed(bucket, [{"key": f"d/f{i:04d}", "size": 1} for i in range(1200)])
    mnt = mount(bucket, "--metadata-ttl", "60").path
    assert (mnt / "d").is_dir()  # fetched the first page: f0000 to f0999
    (mnt / "d" / "a-new").write_bytes(b"new")  # sorts before that page's end
    os.unlink(mnt / "d" / "f0005")
    names = os.listdir(mnt / "d")
    assert len(names) == 1200 and "a-new" in names and "f0005" not in names


def test_stat_after_listing_makes_no_request(server, bucket, mount):
    server.seed(bucket, [{"key": f"d/f{i}", "size": i} for i in range(20)])
    mnt = mount(bucket, "--metadata-ttl", "60").path
    names = os.listdir(mnt / "d")
    server.reset()
    sizes = {name: os.stat(mnt / "d" / name).st_size for name in names}
    assert sizes == {f"f{i}": i for i in range(20)}
    assert server.counts() == {}


def test_extended_attributes_are_not_served(tree, mount):
    """Not implementing getxattr lets the kernel answer it alone: otherwise ls -l asks the
    mount for security.selinux and system.posix_acl_access of every file."""
    mnt = mount(tree).path
    for name in ("user.anything", "security.selinux"):  # the kernel no longer asks after the first
        with pytest.raises(OSError) as info:
            os.getxattr(mnt / "top.txt", name)
        assert info.value.errno == errno.EOPNOTSUPP


def test_odd_keys_are_skipped_not_fatal(server, bucket, mount):
    odd = [
        "odd//empty-component",
        "odd/./dot",
        "odd/../dotdot",
        "odd/" + "x" * 256,
        "odd/nul\0byte",
    ]
    good = ["odd/fine.txt", "odd/ünïcode ñame.txt", "odd/with space", "odd/percent%20and+plus"]
    server.seed(bucket, [{"key": k, "size": 1} for k in odd + good])
    m = mount(bucket)
    assert sorted(os.listdir(m.path / "odd")) == sorted(k.split("/", 1)[1] for k in good)
    for key in good:
        assert (m.path / key).read_bytes() == pattern(key, 1)
    log = m.log()
    assert log.count("cannot be a file name") == len(odd), log


def test_file_shadowed_by_directory(server, bucket, mount):
    server.seed(bucket, [{"key": "both", "size": 3}, {"key": "both/child", "size": 1}])
    m = mount(bucket)
    assert stat.S_ISDIR(os.stat(m.path / "both").st_mode)
    assert os.listdir(m.path) == ["both"]
    assert os.listdir(m.path / "both") == ["child"]
    assert "is hidden by the directory" in m.log()


def test_inode_numbers_are_stable_and_distinct(tree, mount):
    mnt = mount(tree).path
    first = os.stat(mnt / "docs" / "readme.md").st_ino
    with open(mnt / "docs" / "readme.md", "rb") as held:
        assert os.fstat(held.fileno()).st_ino == first
        assert os.stat(mnt / "docs" / "readme.md").st_ino == first
    assert os.stat(mnt / "top.txt").st_ino != first


def test_ownership_and_modes_follow_options(tree, mount):
    mnt = mount(
        tree, "--uid", "1234", "--gid", "4321", "--file-mode", "0600", "--dir-mode", "0750"
    ).path
    f = os.stat(mnt / "top.txt")
    d = os.stat(mnt / "docs")
    assert (f.st_uid, f.st_gid, stat.S_IMODE(f.st_mode)) == (1234, 4321, 0o600)
    assert (d.st_uid, d.st_gid, stat.S_IMODE(d.st_mode)) == (1234, 4321, 0o750)


def test_prefix_mounts_a_subtree(tree, mount):
    mnt = mount(tree, "--prefix", "docs/").path
    assert sorted(os.listdir(mnt)) == ["guide", "readme.md"]
    assert (mnt / "guide" / "intro.md").read_bytes() == b"intro"


def test_statfs_reports_plenty_of_space(tree, mount):
    fs = os.statvfs(mount(tree).path)
    assert fs.f_bavail * fs.f_frsize > 1 << 50
    assert fs.f_namemax == 255


def test_virtual_hosted_addressing(server, tree, mount):
    from conftest import cwfs_env

    port = server.url.rsplit(":", 1)[1]
    env = cwfs_env(server, HTTP_PROXY=f"http://127.0.0.1:{port}", NO_PROXY="")
    m = mount(
        tree, "--addressing-style", "virtual", "--endpoint", f"http://localhost:{port}", env=env
    )
    server.reset()
    assert (m.path / "docs" / "readme.md").read_bytes() == TREE["docs/readme.md"]
    requests = server.requests()
    assert requests and all(r["addressing"] == "virtual" and r["bucket"] == tree for r in requests)


def test_read_only_mount_refuses_writes(tree, mount):
    mnt = mount(tree, "--read-only").path
    with pytest.raises(OSError) as info:
        open(mnt / "new.txt", "wb")
    assert info.value.errno == errno.EROFS


def test_a_directory_marker_holding_data_is_warned_about_once(server, bucket, s3, mount):
    """``mk/`` with 4 bytes shows as the directory ``mk``; its bytes cannot be read
    through the mount, so the log says so (issue 12 §6), once."""
    s3.put_object(Bucket=bucket, Key="mk/", Body=b"data")
    s3.put_object(Bucket=bucket, Key="mk/inside", Body=b"x")
    m = mount(bucket)
    assert stat.S_ISDIR(os.stat(m.path / "mk").st_mode)
    assert os.listdir(m.path / "mk") == ["inside"]
    time.sleep(1.2)
    os.listdir(m.path)
    os.stat(m.path / "mk")
    assert m.log().count("'mk/' holds 4 bytes") == 1, m.log()
