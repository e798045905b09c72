"""Attributes as compact records, for the metadata cache's hundreds of thousands of names.

An `Attrs` with the ETag string and integers it points to takes about 270 bytes; most
cached names are plain files seen in a listing, whose attributes fit in one 41-byte
record (74 bytes as a bytes object): size, mtime, mode, the exactness flag and the ETag
as its MD5 digest and part count. Everything else (directories, links, owners, special
files, ETags that are not an MD5) stays an `Attrs`: rare, and a directory is mostly the
shared `DIRECTORY`.
"""

from __future__ import annotations

import re
import struct

from cwfs.attrs import DIRECTORY, Attrs

_RECORD = struct.Struct("<QqIIB16s")  # size, mtime_ns, mode, parts, exact, MD5
_NO_MODE = 0xFFFFFFFF
_MD5_ETAG = re.compile(r'"([0-9a-f]{32})(?:-([1-9][0-9]{0,4}))?"')

Record = bytes | Attrs


def pack(attrs: Attrs) -> Record:
    """``attrs`` as a record when it is a plain file with an MD5 ETag, else itself."""
    if attrs == DIRECTORY:
        return DIRECTORY
    if (
        attrs.is_dir
        or attrs.link is not None
        or attrs.uid is not None
        or attrs.gid is not None
        or attrs.special
        or attrs.rdev
        or attrs.ctime_ns
        or attrs.etag is None
        or attrs.size < 0
        or attrs.mtime_ns < 0
    ):
        return attrs
    match = _MD5_ETAG.fullmatch(attrs.etag)
    if match is None:
        return attrs
    digest, parts = match.groups()
    mode = _NO_MODE if attrs.mode is None else attrs.mode
    return _RECORD.pack(
        attrs.size, attrs.mtime_ns, mode, int(parts or 0), attrs.exact, bytes.fromhex(digest)
    )


def unpack(record: Record) -> Attrs:
    """The `Attrs` that `pack` made ``record`` of."""
    if isinstance(record, Attrs):
        return record
    size, mtime_ns, mode, parts, exact, digest = _RECORD.unpack(record)
    etag = f'"{digest.hex()}-{parts}"' if parts else f'"{digest.hex()}"'
    return Attrs(
        is_dir=False,
        size=size,
        mtime_ns=mtime_ns,
        etag=etag,
        mode=None if mode == _NO_MODE else mode,
        exact=bool(exact),
    )
