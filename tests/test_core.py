"""The fast tier: the filesystem core driven in-process, with no kernel mount.

Each test builds a mount's core exactly as ``cwfs mount`` does (`build_filesystem`),
against the embedded S3 server, inside ``trio.run`` on a `trio.testing.MockClock`:
TTLs expire when a test jumps the clock, not after a sleep, and races are played out
in the order a test chooses. What only the kernel shows (readdir, page cache,
read-ahead, signals) stays with the real-mount tests.
"""

from __future__ import annotations

import errno
import math
import os
import time
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from cwfs.attrs import Attrs
from cwfs.cli import build_parser
from cwfs.config import build_config
from cwfs.errors import BadHandle, Exists, FsError, NotEmpty, NotFound, Stale, TooLarge
from cwfs.fs import AttrChanges, Filesystem
from cwfs.kept import find_kept
from cwfs.lota import ReadEndpoint
from cwfs.mount import Limits, build_filesystem
from cwfs.store import ObjectStore
from cwfs.wire import WireClient

Scenario = Callable[[Filesystem, trio.testing.MockClock], Awaitable[None]]


@pytest.fixture
def run_core(server, tmp_path, monkeypatch):
    """``run_core(bucket, scenario, *flags)`` runs ``scenario(core, clock)`` in trio."""
    monkeypatch.setenv("ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("SECRET_ACCESS_KEY", server.secret_key)
    # While a socket waits, a mock clock jumps to the next deadline: no network timeouts.
    monkeypatch.setattr(WireClient, "deadline", staticmethod(lambda _: math.inf))
    (tmp_path / "mnt").mkdir()

    def run(bucket: str, scenario: Scenario, *flags: str) -> None:
        argv = ["mount", bucket, str(tmp_path / "mnt"), "--endpoint", server.url,
                "--addressing-style", "path", "--cache-dir", str(tmp_path / "cache"),
                "--attribute-store", str(tmp_path / "attributes.sqlite"), *flags]  # fmt: skip
        config = build_config(build_parser().parse_args(argv), environ={}, home=tmp_path)
        clock = trio.testing.MockClock(autojump_threshold=0)

        async def main() -> None:
            store = ObjectStore(config.store_settings)
            async with trio.open_nursery() as nursery:
                core, _ = build_filesystem(
                    config,
                    store,
                    ReadEndpoint(store, None),
                    False,
                    tmp_path / "cache",
                    nursery,
                    "test-mount.lock",
                    Limits.of(config),
                )
                await scenario(core, clock)
                nursery.cancel_scope.cancel()

        (tmp_path / "cache").mkdir(exist_ok=True)
        trio.run(main, clock=clock)

    return run


def body_of(s3, bucket, key) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


async def write_file(core: Filesystem, path: str, data: bytes) -> Attrs:
    """create, write, flush, release: what ``open(p, "wb").write(data)`` asks of the core."""
    handle, _ = await core.create(path, 0o644)
    await core.write(handle, 0, data)
    await core.flush(handle)
    await core.release(handle)
    return await core.stat(path)


def test_a_truncate_racing_the_release_of_a_closed_file_reaches_s3(server, bucket, s3, run_core):
    """The kernel's RELEASE comes after close() returned: the truncate may start at any
    point of it. Each round lets the release run ``steps`` scheduling steps first."""

    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        for steps in range(12):
            path = f"f{steps}"
            await write_file(core, path, b"hello world")
            handle, _ = await core.open(path, os.O_RDWR)
            await core.write(handle, 0, b"J")
            await core.flush(handle)  # close() returns here
            async with trio.open_nursery() as nursery:
                nursery.start_soon(core.release, handle)
                for _ in range(steps):
                    await trio.lowlevel.checkpoint()
                await core.setattr(path, AttrChanges(size=8), None)
                assert body_of(s3, bucket, path) == b"Jello wo", f"after {steps} steps"

    run_core(bucket, scenario)


def test_changes_by_path_to_a_file_being_written_wait_for_its_close(server, bucket, s3, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        handle, _ = await core.create("w", 0o600)
        await core.write(handle, 0, b"0123456789")
        server.reset()
        attrs = await core.setattr("w", AttrChanges(size=4, mode=0o640), None)
        assert (attrs.size, attrs.mode) == (4, 0o640)
        assert server.counts() == {}, "deferred to the writer's close"
        await core.flush(handle)
        await core.release(handle)
        head = s3.head_object(Bucket=bucket, Key="w")
        assert head["ContentLength"] == 4 and int(head["Metadata"]["mode"]) & 0o7777 == 0o640

    run_core(bucket, scenario)


def test_sizes_past_the_largest_object_are_refused_before_any_request(server, bucket, s3, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        await write_file(core, "f", b"data")
        server.reset()
        with pytest.raises(TooLarge) as info:
            await core.setattr("f", AttrChanges(size=(5 << 40) + 1), None)
        assert info.value.errno == errno.EFBIG
        handle, _ = await core.open("f", os.O_WRONLY)
        with pytest.raises(TooLarge):
            await core.write(handle, 5 << 40, b"x")
        await core.release(handle)
        assert server.counts() == {}

    run_core(bucket, scenario)


def test_another_clients_change_shows_once_the_ttl_has_passed(server, bucket, s3, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        assert (await core.stat("a")).size == 1
        assert await core.find("b") is None
        s3.put_object(Bucket=bucket, Key="a", Body=b"changed")
        s3.put_object(Bucket=bucket, Key="b", Body=b"new")
        server.reset()
        clock.jump(4.9)
        assert (await core.stat("a")).size == 1 and await core.find("b") is None
        assert server.counts() == {}, "answered from the cache within the TTL"
        clock.jump(0.2)
        assert (await core.stat("a")).size == 7 and (await core.stat("b")).size == 3

    s3.put_object(Bucket=bucket, Key="a", Body=b"x")
    run_core(bucket, scenario, "--metadata-ttl", "5", "--negative-ttl", "5")


def test_a_read_of_a_replaced_object_is_stale(server, bucket, s3, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        handle, _ = await core.open("r", os.O_RDONLY)
        s3.put_object(Bucket=bucket, Key="r", Body=b"second version")
        with pytest.raises(Stale):
            await core.read(handle, 0, 5)
        await core.release(handle)

    s3.put_object(Bucket=bucket, Key="r", Body=b"first")
    run_core(bucket, scenario)


def test_the_loser_of_a_create_race_gets_exists_and_keeps_its_data(
    server, bucket, s3, run_core, tmp_path
):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        handle, _ = await core.create("race", 0o644)
        await core.write(handle, 0, b"ours")
        s3.put_object(Bucket=bucket, Key="race", Body=b"theirs")
        with pytest.raises(Exists):
            await core.flush(handle)
        await core.release(handle)
        assert body_of(s3, bucket, "race") == b"theirs"
        kept = find_kept([tmp_path / "cache"])
        assert [k.path.read_bytes() for k in kept] == [b"ours"]
        record = kept[0].record
        assert record is not None
        assert (record.key, record.base_etag, record.size) == ("race", None, 4)
        assert "another writer created it first" in record.reason

    run_core(bucket, scenario)


def test_rename_is_one_request_and_noreplace_keeps_the_target(server, bucket, s3, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        await write_file(core, "a", b"A")
        await write_file(core, "b", b"B")
        assert await core.find("c") is None  # the kernel looks the target up first
        server.reset()
        await core.rename("a", "c")
        assert server.counts() == {"RenameObject": 1}
        with pytest.raises(Exists):
            await core.rename("c", "b", no_replace=True)
        assert body_of(s3, bucket, "b") == b"B" and body_of(s3, bucket, "c") == b"A"
        with pytest.raises(NotFound):
            await core.stat("a")

    run_core(bucket, scenario)


def test_directory_rules(server, bucket, s3, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        assert (await core.make_dir("d")).is_dir
        with pytest.raises(Exists):
            await core.make_dir("d")
        handle, _ = await core.create("d/open", 0o644)
        with pytest.raises(NotEmpty):
            await core.remove_dir("d")  # a file being written below it
        await core.release(handle)
        await core.unlink("d/open")
        await core.remove_dir("d")
        assert await core.find("d") is None

    run_core(bucket, scenario)


def test_writing_through_a_read_only_handle_is_ebadf(server, bucket, s3, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        handle, _ = await core.open("ro", os.O_RDONLY)
        with pytest.raises(BadHandle) as info:
            await core.write(handle, 0, b"x")
        assert isinstance(info.value, FsError) and info.value.errno == errno.EBADF
        await core.release(handle)

    s3.put_object(Bucket=bucket, Key="ro", Body=b"x")
    run_core(bucket, scenario)


async def ls_l(core: Filesystem, path: str) -> list[str]:
    """What ``ls -l`` asks of the core: the directory's lookup, then its entries (the
    kernel's readdirplus carries their attributes, so no lookup per entry)."""
    await core.stat(path)
    listing = core.list_dir(path)
    names, index = [], 0
    while (entry := await listing.entry(index)) is not None:
        names.append(entry[0])
        index += 1
    await listing.close()
    return sorted(names)


def test_ls_l_past_the_ttl_is_one_list_per_1000_names_and_no_lookup(server, bucket, run_core):
    """Issue 14: ``ls -l`` stats each name right after readdir hands it out. The listing
    of 12,000 names (a flat pass of 10 pages, then 2 delimited ones) and its stats take
    12 s against a TTL of 1 s; an entry's TTL starts when it is handed out, so no stat
    goes to the store, nor does the directory's own lookup, which the kernel repeats."""

    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        server.reset()
        assert (await core.stat("big")).is_dir  # the kernel's lookup: the first page
        listing = core.list_dir("big")
        index = 0
        while (entry := await listing.entry(index)) is not None:
            clock.jump(0.001)  # ls -l's lstat of the name it just read
            assert (await core.stat(f"big/{entry[0]}")).size == 1
            index += 1
            if index % 500 == 0:  # the kernel's lookup of the directory, every TTL or so
                assert (await core.stat("big")).is_dir
        await listing.close()
        assert index == 12_000
        assert server.counts() == {"ListObjectsV2": 12}

    server.seed(bucket, [{"key": f"big/f{i:05d}", "size": 1} for i in range(12_000)])
    run_core(bucket, scenario, "--metadata-ttl", "1")


def test_a_walk_of_directories_lasting_past_30_ttls_sends_no_head(server, bucket, run_core):
    """Issue 14: ``find`` over 1,000,000 objects in 1,000 directories lasts minutes, past
    the 30 TTLs for which the top directory counted as large and its subdirectories as
    directories seen lately. Then the top was listed flat again (10 pages) and the
    directories left were each looked up with HeadObject and a one-key listing (637
    HeadObject, 1,697 ListObjectsV2 in all). Listing the top again, with a delimiter,
    keeps both known."""

    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        server.reset()
        assert len(await ls_l(core, "t")) == 12
        for d in range(12):
            clock.jump(3)  # 36 s in all
            assert len(await ls_l(core, f"t/d{d:02d}")) == 1000
        counts = server.counts()
        assert counts.get("HeadObject", 0) == 0, counts
        # 10 flat pages and the top's delimited page; then, each walk past the TTL, the
        # top again with a delimiter (one page) and the directory walked (one page).
        assert counts["ListObjectsV2"] == 10 + 1 + 12 * 2, counts

    server.seed(
        bucket,
        [{"key": f"t/d{d:02d}/f{i:04d}", "size": 1} for d in range(12) for i in range(1000)],
    )
    run_core(bucket, scenario, "--metadata-ttl", "1")


def test_a_listing_renews_the_directorys_own_entry(server, bucket, run_core):
    """``ls -l`` of a large directory can outlive the lookup it began with: the listing,
    being newer, answers the directory's next lookup."""

    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        assert (await core.stat("d")).is_dir  # at t=0, with its first page: cached until t=4
        clock.jump(3)
        assert len(await ls_l(core, "d")) == 1200  # completed at t=3: fresh until t=7
        clock.jump(2)
        server.reset()
        assert (await core.stat("d")).is_dir  # t=5: the listing answers
        assert server.counts() == {}

    server.seed(bucket, [{"key": f"d/f{i:04d}", "size": 1} for i in range(1200)])
    run_core(bucket, scenario, "--metadata-ttl", "4")


def test_another_clients_changes_show_in_listings_after_the_ttl(server, bucket, s3, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        assert await ls_l(core, "d") == ["a"]
        assert await core.find("d/b") is None
        s3.put_object(Bucket=bucket, Key="d/b", Body=b"from elsewhere")
        s3.put_object(Bucket=bucket, Key="d/a", Body=b"changed elsewhere")
        clock.jump(0.9)
        assert await ls_l(core, "d") == ["a"]
        clock.jump(0.2)
        assert await ls_l(core, "d") == ["a", "b"]
        assert (await core.stat("d/a")).size == len(b"changed elsewhere")

    server.seed(bucket, [{"key": "d/a", "size": 1}])
    run_core(bucket, scenario, "--metadata-ttl", "1", "--negative-ttl", "1")


def test_lookups_in_a_directory_listed_lately_relist_it_once(server, bucket, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        assert await ls_l(core, "") == ["busy"]
        await ls_l(core, "busy")
        clock.jump(1.5)  # the listings and every entry have expired
        server.reset()
        sizes = [(await core.stat(f"busy/f{i:03d}")).size for i in range(200)]
        assert sizes == list(range(200))
        assert await core.find("busy/absent") is None
        assert server.counts() == {"ListObjectsV2": 1}, "one relisting, not two requests per name"

    server.seed(bucket, [{"key": f"busy/f{i:03d}", "size": i} for i in range(200)])
    run_core(bucket, scenario, "--metadata-ttl", "1")


def test_creating_files_past_the_ttl_relists_instead_of_looking_up_each(server, bucket, run_core):
    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        await core.make_dir("out")
        clock.jump(1.5)  # the new directory's (empty) listing has expired
        server.reset()
        for i in range(30):
            assert await core.find(f"out/f{i}") is None  # the kernel's lookup before create
            await write_file(core, f"out/f{i}", b"x")
        assert server.counts() == {"ListObjectsV2": 1, "PutObject": 30}

    run_core(bucket, scenario, "--metadata-ttl", "1")


def test_a_large_directory_is_looked_up_again_with_one_key(server, bucket, run_core):
    """The kernel looks a directory up again every TTL: a large one needs no new first page."""

    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        assert (await core.stat("big")).is_dir
        clock.jump(1.5)
        server.reset()
        assert (await core.stat("big")).is_dir
        listed = [r for r in server.requests() if r["bucket"] == bucket]
        assert [r["op"] for r in listed] == ["ListObjectsV2"], listed
        assert listed[0]["body_bytes"] < 4096, "a one-key listing, not a page of 1,000"

    server.seed(bucket, [{"key": f"big/f{i:04d}", "size": 1} for i in range(1200)])
    run_core(bucket, scenario, "--metadata-ttl", "1")


def test_a_large_directory_is_looked_up_again_without_listing_its_parent(server, bucket, run_core):
    """An ``ls -l`` of a large directory outlasts the TTL, and the kernel looks the
    directory up again every TTL meanwhile: listing its parent for that would list the
    directory whole again (flat), each time."""

    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        assert await ls_l(core, "") == ["big"]
        await ls_l(core, "big")
        server.reset()
        for _ in range(5):
            clock.jump(1.5)
            assert (await core.stat("big")).is_dir
        assert server.counts() == {"ListObjectsV2": 5}

    server.seed(bucket, [{"key": f"big/f{i:04d}", "size": 1} for i in range(1200)])
    run_core(bucket, scenario, "--metadata-ttl", "1")


def test_a_listing_sent_before_our_upload_does_not_bring_the_old_etag_back(
    server, bucket, s3, run_core
):
    """The listing is computed by the server before our upload and delivered after it:
    applying it would make the next conditional request fail with ESTALE."""

    async def scenario(core: Filesystem, clock: trio.testing.MockClock) -> None:
        server.reset()
        server.add_fault(op="ListObjectsV2", bucket=bucket, phase="slow", delay=3, times=1)
        listed = trio.Event()

        async def list_slowly() -> None:
            await core.list_dir("x/y").entry(0)
            listed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(list_slowly)
            while not [r for r in server.requests() if r["bucket"] == bucket]:
                await trio.to_thread.run_sync(time.sleep, 0.01)
            handle, _ = await core.open("x/y/f", os.O_WRONLY | os.O_APPEND)
            await core.write(handle, 4, b"two\n")
            await core.flush(handle)
            await core.release(handle)
            assert not listed.is_set(), "the slow listing must arrive after our upload"
        new_etag = s3.head_object(Bucket=bucket, Key="x/y/f")["ETag"]
        assert (await core.stat("x/y/f")).etag == new_etag
        listing = core.list_dir("x/y")
        assert (await listing.entry(0)) == ("f", await core.stat("x/y/f"))
        handle, _ = await core.open("x/y/f", os.O_WRONLY | os.O_APPEND)
        await core.write(handle, 8, b"three\n")  # fetches the base version: If-Match
        await core.flush(handle)
        await core.release(handle)
        assert body_of(s3, bucket, "x/y/f") == b"one\ntwo\nthree\n"

    s3.put_object(Bucket=bucket, Key="x/y/f", Body=b"one\n")
    run_core(bucket, scenario)
