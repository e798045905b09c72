"""Issue 14 through a real mount: directories larger than the metadata cache, walks of
many directories, and reading a large directory again from its start."""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import subprocess
import time
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qs

from conftest import memory_kib, wait_for

BYTES_PER_NAME = 300  # the bound per cached name, and what a name the kernel
# holds costs (its inode number and path, about 250 bytes)


def seed_files(server, bucket: str, prefix: str, count: int) -> None:
    for start in range(0, count, 20_000):
        objects = [
            {"key": f"{prefix}f{i:06d}", "size": i % 7}
            for i in range(start, min(count, start + 20_000))
        ]
        server.seed(bucket, objects)


def test_a_directory_larger_than_the_cache_lists_completely_within_its_memory(
    server, bucket, mount
):
    """40,000 names and a cache of 1,000 entries: the listing is streamed, not kept;
    each name still comes with its attributes (no HeadObject), and the mount grows by
    what the kernel's references cost, not by a kept listing (about 1 KiB a name
    before)."""
    names, entries = 40_000, 1_000
    seed_files(server, bucket, "huge/", names)
    m = mount(bucket, "--metadata-cache-entries", str(entries))
    os.listdir(m.path)
    baseline = memory_kib(m.proc.pid, "VmRSS") * 1024
    server.reset()
    out = subprocess.run(
        ["ls", "-l", str(m.path / "huge")], capture_output=True, text=True, check=True
    ).stdout
    listed = [line.split() for line in out.splitlines() if line.startswith("-")]
    assert [fields[-1] for fields in listed] == [f"f{i:06d}" for i in range(names)]
    assert all(fields[4] == str(i % 7) for i, fields in enumerate(listed))
    counts = server.counts()
    assert counts.get("ListObjectsV2") == names // 1000, counts
    assert counts.get("HeadObject", 0) == 0, counts
    grown = memory_kib(m.proc.pid, "VmRSS") * 1024 - baseline
    assert grown < (names + entries) * BYTES_PER_NAME, f"grew {grown / names:.0f} B a name"


def test_find_over_100_directories_of_1000_is_one_list_per_directory_and_no_head(
    server, bucket, mount
):
    """The walk outlasts the 1 s TTL many times: lookups of directories its listings
    showed start their listing instead of asking HeadObject, and a lookup in the top
    directory after its listing expired lists it again with a delimiter (one page), not
    flat (ten). It cost 199 ListObjectsV2 and 81 HeadObject. Walk-ahead lists no
    directory twice."""
    dirs, files = 100, 1000
    for d in range(dirs):
        server.seed(bucket, [{"key": f"t/d{d:03d}/f{i:04d}", "size": 1} for i in range(files)])
    mnt = mount(bucket).path
    server.reset()
    start = time.monotonic()
    out = subprocess.run(["find", str(mnt / "t")], capture_output=True, text=True, check=True)
    elapsed = time.monotonic() - start
    assert out.stdout.count("\n") == 1 + dirs + dirs * files
    counts = server.counts()
    assert counts.get("HeadObject", 0) == 0, counts
    listed = listed_prefixes(server)
    # 10 flat pages hold d000-d009 (d009 up to its last key only), then one page for each
    # of the 91 others; the top: those 10 pages, its delimited page, and then at most a
    # one-key lookup and a delimited page per TTL walked (the kernel looks its
    # entries up again).
    assert sorted(p for p in listed if p != "t/") == [f"t/d{d:03d}/" for d in range(9, dirs)]
    assert all(listed[p] == 1 for p in listed if p != "t/"), listed
    assert 11 <= listed["t/"] <= 11 + 2 * math.ceil(elapsed), (listed["t/"], elapsed)


def listed_prefixes(server) -> Counter[str]:
    """How many ListObjectsV2 the server answered for each prefix."""
    return Counter(
        parse_qs(r["query"]).get("prefix", [""])[0]
        for r in server.requests()
        if r["op"] == "ListObjectsV2"
    )


def test_a_walk_lists_the_next_directories_ahead_and_a_single_ls_does_not(server, bucket, mount):
    """Listing d1 right after d0 is a walk: d2 and d3 are listed in the background, and
    reading them then costs nothing. Listing one directory alone starts nothing. (The
    10,000 files of ``a`` fill the flat pass over ``w``, which would otherwise list the
    small directories after it whole.)"""
    seed_files(server, bucket, "w/a/", 10_000)
    for d in range(8):
        server.seed(bucket, [{"key": f"w/d{d}/f{i}", "size": 1} for i in range(3)])
    mnt = mount(bucket).path
    assert len(os.listdir(mnt / "w")) == 9
    server.reset()
    os.listdir(mnt / "w" / "d6")
    time.sleep(0.3)
    assert listed_prefixes(server) == Counter({"w/d6/": 1})
    server.reset()
    os.listdir(mnt / "w" / "d0")
    os.listdir(mnt / "w" / "d1")
    wait_for(lambda: len(listed_prefixes(server)) == 4)
    assert listed_prefixes(server) == Counter({f"w/d{d}/": 1 for d in range(4)})
    assert sorted(os.listdir(mnt / "w" / "d2")) == ["f0", "f1", "f2"]
    assert listed_prefixes(server)["w/d2/"] == 1


def test_reading_a_large_directory_again_from_its_start_lists_it_whole(server, bucket, mount):
    """An open directory keeps only the entries from where the kernel reads on:
    ``rewinddir`` after 5,000 of 12,000 names lists it again and gives every name."""
    seed_files(server, bucket, "big/", 12_000)
    directory = mount(bucket).path / "big"
    first, again = read_with_rewind(directory, 5_000)
    assert len(first) == 5_000
    assert sorted(again) == [f"f{i:06d}" for i in range(12_000)]


class Dirent(ctypes.Structure):
    _fields_ = [
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    ]


def read_with_rewind(directory: Path, before: int) -> tuple[list[str], list[str]]:
    """Names read with readdir(3): ``before`` of them, then all after rewinddir(3)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.opendir.restype = ctypes.c_void_p
    libc.readdir.restype = ctypes.POINTER(Dirent)
    libc.readdir.argtypes = libc.rewinddir.argtypes = libc.closedir.argtypes = [ctypes.c_void_p]
    handle = libc.opendir(os.fsencode(directory))
    assert handle, os.strerror(ctypes.get_errno())

    def names(limit: int) -> list[str]:
        found: list[str] = []
        while len(found) < limit and (entry := libc.readdir(handle)):
            name = entry.contents.d_name.decode()
            if name not in (".", ".."):
                found.append(name)
        return found

    try:
        first = names(before)
        libc.rewinddir(handle)
        return first, names(1 << 30)
    finally:
        libc.closedir(handle)
