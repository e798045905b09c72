"""A sorted index of each bucket's key names, so that a listing page costs O(page).

moto's ListObjects and ListObjectsV2 walk and sort every key of the bucket for every
page (listing 50,000 names, 50 pages, took about 12 s). Here each bucket's key store
(moto's ``_VersionedKeyStore``, subclassed) keeps a sorted list of its live names: every
path that changes a bucket's keys ends in the store's ``__setitem__``, ``setlist`` or
``pop`` (PutObject, CopyObject, CompleteMultipartUpload, deletes and delete markers,
seeding) or in :meth:`IndexedKeyStore.detach` (RenameObject), so the index cannot miss
one of them. The two listing methods of moto's backend are replaced by ones that bisect
into the index; moto's response code still builds the XML from what they return.

The answers are moto's, continuation tokens included, except in four ways, each as S3
answers: ListObjects (v1) merges common prefixes with keys, counts each toward MaxKeys
and applies the marker to both (moto returned every common prefix on every page, which
cannot be O(page)); a key whose latest version is a delete marker makes no common prefix;
a page holds at most 1,000 entries; an unknown continuation token is a 400, not a 500.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from typing import Any, cast

from moto.s3 import models
from moto.s3.exceptions import InvalidContinuationToken
from moto.s3.models import FakeDeleteMarker, FakeKey
from moto.s3.responses import S3Response
from moto.s3.utils import _VersionedKeyStore

from .listcontents import serialized

#: The most entries S3 returns in one listing page, whatever MaxKeys asks for.
PAGE_CAP = 1000
_MAX_CHAR = chr(0x10FFFF)


class IndexedKeyStore(_VersionedKeyStore):
    """moto's key store (name -> list of versions) plus ``names``: the sorted names whose
    latest version is an object, not a delete marker. Call with the server's lock held."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def _sync(self, name: str) -> None:
        """Bring ``name``'s place in the index in line with what the store now holds."""
        versions: list[Any] = dict.get(self, name) or []
        live = bool(versions) and not isinstance(versions[-1], FakeDeleteMarker)
        at = bisect_left(self.names, name)
        present = at < len(self.names) and self.names[at] == name
        if live and not present:
            self.names.insert(at, name)
        elif present and not live:
            del self.names[at]

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        self._sync(key)

    def setlist(self, key: str, list_: Any) -> None:
        super().setlist(key, list_)
        self._sync(key)

    def pop(self, key: str) -> None:  # type: ignore[override]
        try:
            super().pop(key)
        finally:
            self._sync(key)

    def detach(self, key: str) -> None:
        """Remove a name without disposing its versions (a rename files them elsewhere)."""
        dict.__delitem__(self, key)
        self._sync(key)


def past_prefix(prefix: str) -> str | None:
    """The least string above every string that starts with ``prefix`` (None: there is none)."""
    stem = prefix.rstrip(_MAX_CHAR)
    return stem[:-1] + chr(ord(stem[-1]) + 1) if stem else None


def list_page(
    store: IndexedKeyStore, prefix: str | None, delimiter: str | None, after: str | None, cap: int
) -> list[FakeKey | str]:
    """Keys and common prefixes below ``prefix`` and above ``after``, in name order: at most
    ``cap + 1`` of them (one more than a page, to tell whether the page is truncated).

    A common prefix is skipped as a whole with one bisection, so the work is O(page log n)
    whatever the bucket holds. As in moto, a common prefix not above ``after`` is left out
    even when some of its keys are.
    """
    names, prefix = store.names, prefix or ""
    pos = bisect_left(names, prefix)
    if after:
        pos = max(pos, bisect_right(names, after))
    entries: list[FakeKey | str] = []
    while len(entries) <= cap and pos < len(names):
        name = names[pos]
        if not name.startswith(prefix):
            break
        cut = name.find(delimiter, len(prefix)) if delimiter else -1
        if cut < 0:
            entries.append(store[name])
            pos += 1
            continue
        common = name[: cut + len(delimiter or "")]
        end = past_prefix(common)
        pos = len(names) if end is None else bisect_left(names, end, pos)
        if not after or common > after:
            entries.append(common)
    return entries


def _cap(max_keys: int) -> int:
    return max(0, min(max_keys, PAGE_CAP))


def list_objects(
    self: models.S3Backend,
    bucket: models.FakeBucket,
    prefix: str | None,
    delimiter: str | None,
    marker: str | None,
    max_keys: int,
) -> tuple[list[FakeKey], list[str], bool, str | None]:
    """ListObjects (v1) from the index; NextMarker is a token as moto makes it."""
    after = (self._pagination_tokens.get(marker) or marker) if marker else None
    cap = _cap(max_keys)
    entries = list_page(cast(IndexedKeyStore, bucket.keys), prefix, delimiter, after, cap)
    entries, truncated, next_marker = self._truncate_result(entries, cap)
    keys = [e for e in entries if isinstance(e, FakeKey)]
    return keys, [e for e in entries if isinstance(e, str)], truncated, next_marker


def list_objects_v2(
    self: models.S3Backend,
    bucket: models.FakeBucket,
    prefix: str | None,
    delimiter: str | None,
    continuation_token: str | None,
    start_after: str | None,
    max_keys: int,
) -> tuple[list[FakeKey | str], bool, str | None]:
    """ListObjectsV2 from the index; an unknown continuation token is S3's 400."""
    after = start_after
    if continuation_token:
        after = self._pagination_tokens.get(continuation_token)
        if after is None:
            raise InvalidContinuationToken()
    cap = _cap(max_keys)
    entries = list_page(cast(IndexedKeyStore, bucket.keys), prefix, delimiter, after, cap)
    return self._truncate_result(entries, cap)  # type: ignore[no-any-return]


def install(list_from_index: bool = True) -> None:
    """Make buckets created from now on keep the index (RenameObject relies on its
    ``detach``), and listings use it, their objects written by listcontents.py, unless
    told to list as moto does."""
    models._VersionedKeyStore = IndexedKeyStore  # type: ignore[attr-defined,assignment]
    if list_from_index:
        models.S3Backend.list_objects = list_objects  # type: ignore[method-assign,assignment]
        models.S3Backend.list_objects_v2 = list_objects_v2  # type: ignore[method-assign,assignment]
        S3Response.serialized = serialized  # type: ignore[method-assign,assignment]
