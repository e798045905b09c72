"""Pure logic behind large directories: compact attribute records, the metadata cache's
listings, delimited pages turned into entries with each name once, and walk-ahead."""

from __future__ import annotations

import math
import sys

import pytest

from cwfs.attrs import DIRECTORY, LINK_SUFFIX, Attrs
from cwfs.listing import DelimitedNames
from cwfs.metacache import Listing, MetadataCache
from cwfs.records import pack, unpack
from cwfs.walkahead import WalkAhead

MD5 = '"0123456789abcdef0123456789abcdef"'


@pytest.mark.parametrize(
    "attrs",
    [
        Attrs(is_dir=False, size=0, mtime_ns=0, etag=MD5, exact=False),
        Attrs(is_dir=False, size=5 << 40, mtime_ns=1_700_000_000_123_456_789, etag=MD5),
        Attrs(is_dir=False, size=7, mtime_ns=1, etag=MD5[:-1] + '-10000"', mode=0o640),
        Attrs(is_dir=False, size=7, mtime_ns=1, etag=MD5, mode=0),
    ],
)
def test_a_plain_file_becomes_a_small_record_and_back_unchanged(attrs):
    record = pack(attrs)
    assert isinstance(record, bytes)
    assert sys.getsizeof(record) <= 80
    assert unpack(record) == attrs


@pytest.mark.parametrize(
    "attrs",
    [
        DIRECTORY,
        Attrs(is_dir=True, mtime_ns=5, etag=MD5, mode=0o700),
        Attrs(is_dir=False, size=3, etag=MD5, link=LINK_SUFFIX),
        Attrs(is_dir=False, size=3, etag=MD5, uid=1000),
        Attrs(is_dir=False, size=3, etag=MD5, special=0o010000),
        Attrs(is_dir=False, size=3, etag=MD5, ctime_ns=9),
        Attrs(is_dir=False, size=3, etag=None),
        Attrs(is_dir=False, size=3, etag='"not-an-md5"'),
        Attrs(is_dir=False, size=3, etag=MD5.upper()),  # would not come back the same
        Attrs(is_dir=False, size=3, etag=MD5[:-1] + '-0"'),
    ],
)
def test_anything_else_stays_as_it_is(attrs):
    assert pack(attrs) is attrs
    assert unpack(pack(attrs)) is attrs


def test_a_listing_holds_attributes_as_records_and_gives_them_back_in_batches():
    files = [(f"f{i}", Attrs(is_dir=False, size=i, etag=MD5, exact=False)) for i in range(2500)]
    listing = Listing([*files, ("sub", DIRECTORY)])
    assert len(listing) == 2501 and listing["f7"] == files[7][1] and "sub" in listing
    batches = list(listing.batches(1000))
    assert [len(batch) for batch in batches] == [1000, 1000, 501]
    assert [entry for batch in batches for entry in batch] == [*files, ("sub", DIRECTORY)]


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def cache_on(clock: Clock, maxsize: int = 100) -> MetadataCache:
    class Clocked(MetadataCache):
        timer = staticmethod(clock)

    return Clocked(ttl=1, negative_ttl=1, maxsize=maxsize)


def test_a_listing_answers_for_its_names_a_ttl_after_handing_them_out():
    clock = Clock()
    cache = cache_on(clock)
    a = Attrs(is_dir=False, size=1, etag=MD5, exact=False)
    assert cache.put_listing("d", Listing([("a", a), ("b", a)]))
    assert cache.get("d/a") == a and cache.get("d/c") is None
    clock.now = 0.9
    assert cache.renew_listing("d") is not None and cache.renew_listing("e") is None
    clock.now = 1.5
    assert cache.get_listing("d") is None  # listed 1.5 s ago: listed again for readdir
    assert cache.get("d/b") == a  # but still answers for the names it handed out
    clock.now = 2.0
    assert cache.get("d/a") is None


def test_a_listing_larger_than_the_cache_is_not_kept():
    cache = cache_on(Clock(), maxsize=10)
    entries = [(f"f{i}", DIRECTORY) for i in range(11)]
    assert not cache.put_listing("d", Listing(entries))
    assert cache.get_listing("d") is None and cache.get("d/f1") is None
    growing = Listing(entries[:5], complete=False)
    assert cache.put_listing("d", growing) and cache.get("d/f1") == DIRECTORY
    growing.update(entries)
    assert not cache.keep_listing("d", growing)
    assert cache.get("d/f1") is None


def entries_of(pages, listed=()):
    """DelimitedNames over ``pages`` of (key after the prefix, attributes): the entries
    and the hidden keys."""
    hidden: list[str] = []
    names = DelimitedNames(set(listed), hidden.append)
    out = []
    for page in pages:
        for rest, attrs in page:
            name = rest.removesuffix("/").removesuffix(LINK_SUFFIX)
            out += names.add(rest, "p/" + rest, name, attrs)
    return out + names.rest(), hidden


FILE = Attrs(is_dir=False, size=1, etag=MD5, exact=False)
LINK = Attrs(is_dir=False, size=1, etag=MD5, exact=False, link=LINK_SUFFIX)


def test_a_directory_or_link_wins_over_a_file_of_the_same_name_across_pages():
    pages = [
        [("a", FILE), ("a-b", FILE), ("a.txt", FILE)],
        [("a/", DIRECTORY), ("b", FILE)],
        [("b.rclonelink", LINK), ("c", FILE)],
    ]
    entries, hidden = entries_of(pages)
    assert sorted(entries) == sorted(
        [("a", DIRECTORY), ("a-b", FILE), ("a.txt", FILE), ("b", LINK), ("c", FILE)]
    )
    assert hidden == ["p/a", "p/b"]


def test_names_given_by_the_flat_pass_are_not_given_again():
    entries, hidden = entries_of([[("sub/", DIRECTORY), ("x", FILE), ("y", FILE)]], {"sub", "x"})
    assert entries == [("y", FILE)]
    assert hidden == ["p/x"]


def test_an_entry_goes_out_as_soon_as_a_key_that_cannot_repeat_it_arrives():
    names = DelimitedNames(set(), lambda key: None)
    given = 0
    for i in range(10_000):
        rest = f"f{i:05d}"
        given += len(names.add(rest, rest, rest, FILE))
        assert given == i  # all but the newest: nothing piles up
    assert given + len(names.rest()) == 10_000


def test_walk_ahead_starts_the_next_siblings_only_when_a_walk_goes_through_them():
    started: list[str] = []
    order = {"p": ["a", "b", "c", "d", "e", "f"]}
    walk = WalkAhead(started.append, lambda: 0.0, 30.0, 1.0)

    def listed(*paths: str) -> list[str]:
        started.clear()
        for path in paths:
            walk.listed(path, order.get)
        return list(started)

    assert listed("p/c") == []  # alone: no walk
    assert listed("p/c") == []  # the same again
    assert listed("p/a") == []  # backwards
    assert listed("p/b") == ["p/c", "p/d"]  # a follows b: the next two
    assert listed("p/e") == ["p/f"]  # a skip within the window still walks; f is the last
    assert listed("q/x", "q/y") == []  # no listing of q known: nothing to go by
    assert listed("", "top") == []


def test_walk_ahead_lists_no_further_than_the_ttl_covers_at_the_walks_pace():
    """A listing made ahead lives one TTL: at a step of 0.4 s and a TTL of 1 s the
    walk reaches two siblings in time, at 0.6 s one, at 3 s none."""
    started: list[str] = []
    now = [0.0]
    walk = WalkAhead(started.append, lambda: now[0], 30.0, 1.0)
    names = [f"d{i}" for i in range(10)]

    def step(seconds: float, name: str) -> list[str]:
        started.clear()
        now[0] += seconds
        walk.listed(f"p/{name}", {"p": names}.get)
        return list(started)

    assert step(0, "d0") == []
    assert step(0.4, "d1") == ["p/d2", "p/d3"]
    assert step(0.6, "d2") == ["p/d3"]
    assert step(3, "d3") == []
    indefinite = WalkAhead(started.append, lambda: now[0], 30.0, math.inf)
    started.clear()
    for name in ("d0", "d0", "d1"):  # the same directory again, a second apart, then on
        now[0] += 1
        indefinite.listed(f"p/{name}", {"p": names}.get)
    assert started == ["p/d2", "p/d3"]
