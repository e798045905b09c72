"""ListObjectsV2's XML answer, read without botocore.

botocore took about 55 ms of CPU per page of 1,000 keys (its generic response parser,
and a second parse looking for an error inside a 200); ElementTree reads the few
fields cwfs uses in about 12 ms, and building its tree was a quarter of the mount's
CPU in a `find` over 100,000 objects. A page as S3 servers write it (no CDATA, no
comments, no namespace prefix, no attribute on the elements cwfs reads) is therefore
scanned with one regular expression for those elements, in about 3-4 ms; anything else
is read with ElementTree. Keys are requested URL-encoded
(``encoding-type=url``, as botocore does: XML 1.0 cannot carry every byte a key may
hold) and decoded here when the answer says they were.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import NamedTuple
from urllib.parse import unquote_plus


class BadListing(ValueError):
    """The answer is not a ListObjectsV2 result."""


class ListedObject(NamedTuple):
    key: str
    size: int
    last_modified: str | None
    etag: str | None


class ListResult(NamedTuple):
    objects: list[ListedObject]
    prefixes: list[str]
    next_token: str | None  # None on the last page


_PLAIN_ROOT = re.compile(r"\s*(?:<\?xml[^>]*\?>)?\s*<ListBucketResult[\s>]")
_ELEMENTS = re.compile(  # the elements cwfs reads, with anything after the name
    r"<(Contents|CommonPrefixes|Key|Size|LastModified|ETag|Prefix|IsTruncated"
    r"|NextContinuationToken|EncodingType)(?!\w)([^>]*)>([^<]*)"
)
_OBJECT_FIELDS = frozenset({"Key", "Size", "LastModified", "ETag"})


def parse_list_result(body: bytes) -> ListResult:
    """The objects, common prefixes and continuation token of one page."""
    try:
        text = body.decode()
    except UnicodeDecodeError:
        text = ""  # not UTF-8: ElementTree reads what its declaration says
    scanned = _scan(text) if _plain(text) else None
    return scanned if scanned is not None else _parse_tree(body)


def _plain(text: str) -> bool:
    """Whether a page can be scanned: a complete ListBucketResult, without CDATA,
    comment, carriage return (which XML turns into a line feed) or namespace prefix
    (which needs an ``xmlns:`` declaration)."""
    return (
        _PLAIN_ROOT.match(text) is not None
        and text.rstrip().endswith("</ListBucketResult>")
        and not any(mark in text for mark in ("<!", "\r", "xmlns:"))
    )


def _scan(text: str) -> ListResult | None:
    """A page read element by element; None when one of them has attributes or
    spaces in its tag, or an object has no key."""
    objects: list[dict[str, str]] = []
    prefixes: list[str] = []
    top: dict[str, str] = {}
    current: dict[str, str] | None = None  # the <Contents> being read
    in_prefix = False
    for tag, odd, value in _ELEMENTS.findall(text):
        if odd:
            return None
        if "&" in value:
            value = _unescape(value)
        if tag == "Contents":
            current = {}
            objects.append(current)
        elif tag == "CommonPrefixes":
            current, in_prefix = None, True
        elif tag == "Prefix" and in_prefix:
            prefixes.append(value)
            in_prefix = False
        elif current is not None and tag in _OBJECT_FIELDS:
            current[tag] = value
        else:
            top[tag] = value
    if not all("Key" in found for found in objects):
        return None
    url_encoded = top.get("EncodingType") == "url"
    keys = _decoded([found["Key"] for found in objects], url_encoded)
    listed = [
        ListedObject(key, int(found.get("Size") or 0), found.get("LastModified"), found.get("ETag"))
        for key, found in zip(keys, objects, strict=True)
    ]
    return ListResult(
        listed, _decoded(prefixes, url_encoded), _next_token(top.get, top.get("IsTruncated"))
    )


def _unescape(value: str) -> str:
    """An element's text with its character references replaced (most often an ETag's
    quotes, replaced first because `html.unescape` is slow)."""
    value = value.replace("&quot;", '"')
    return html.unescape(value) if "&" in value else value


def _decoded(values: list[str], url_encoded: bool) -> list[str]:
    """URL-decoded in one call: an encoded value holds no line feed (it is ``%0A``), and
    one call over the page costs a fifth of one call per key."""
    if not url_encoded or not values:
        return values
    decoded = unquote_plus("\n".join(values)).split("\n")
    return decoded if len(decoded) == len(values) else [unquote_plus(v) for v in values]


def _parse_tree(body: bytes) -> ListResult:
    """A page read with ElementTree: any well-formed ListBucketResult, with or without
    the S3 namespace."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise BadListing(f"unreadable ListObjectsV2 answer: {exc}") from None
    ns = root.tag[: root.tag.index("}") + 1] if root.tag.startswith("{") else ""
    if root.tag != ns + "ListBucketResult":
        raise BadListing(f"unexpected ListObjectsV2 answer <{root.tag}>")
    decode = _decoder(root.findtext(ns + "EncodingType"))
    objects = [
        ListedObject(
            decode(item.findtext(ns + "Key") or ""),
            int(item.findtext(ns + "Size") or 0),
            item.findtext(ns + "LastModified"),
            item.findtext(ns + "ETag"),
        )
        for item in root.iterfind(ns + "Contents")
    ]
    prefixes = [
        decode(p.findtext(ns + "Prefix") or "") for p in root.iterfind(ns + "CommonPrefixes")
    ]
    return ListResult(
        objects,
        prefixes,
        _next_token(lambda name: root.findtext(ns + name), root.findtext(ns + "IsTruncated")),
    )


def _decoder(encoding_type: str | None) -> Callable[[str], str]:
    return unquote_plus if encoding_type == "url" else str


def _next_token(find: Callable[[str], str | None], truncated: str | None) -> str | None:
    if (truncated or "").strip().lower() != "true":
        return None
    return find("NextContinuationToken")
