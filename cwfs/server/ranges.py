"""GetObject served straight from the stored value: ranged and full, streamed in chunks.

moto copies the whole value (twice) for every GET, ranged or not, which made parallel
ranged reads of large objects crawl. Here a range is a positioned read of just that
slice, and a full GET is streamed, so benchmarks measure the client, not the server.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import timezone
from email.utils import format_datetime

from moto.s3.models import FakeKey, S3Backend

from .backend import Snapshot, current_key, same_etag, snapshot
from .integrity import checksum_headers
from .responses import Response, S3Error, parse_http_date, precondition_failed

CHUNK = 4 << 20
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")

#: Query parameters we leave to moto (rare: versions, parts, header overrides).
DEFER_TO_MOTO = (
    "versionId",
    "partNumber",
    "response-content-type",
    "response-content-disposition",
    "response-content-encoding",
    "response-content-language",
    "response-cache-control",
    "response-expires",
)


def _unsatisfiable(header: str, size: int) -> S3Error:
    return S3Error(
        416,
        "InvalidRange",
        "The requested range is not satisfiable",
        RangeRequested=header,
        ActualObjectSize=str(size),
    )


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, length) for a single byte range, None to serve the whole object.

    Follows S3: unparsable or multi-range headers are ignored (full 200); a range that
    starts past the end, or a zero-length suffix, is 416 InvalidRange.
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if first:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
        if last and int(last) < start:
            return None
        if start >= size:
            raise _unsatisfiable(header, size)
        return start, end - start + 1
    suffix = int(last)
    if suffix == 0 or size == 0:
        raise _unsatisfiable(header, size)
    length = min(suffix, size)
    return size - length, length


class NotModified(Exception):
    """Raised inside the key lock when the client's copy is current (answer 304)."""


def check_read_conditions(headers: Mapping[str, str | None], etag: str, key: FakeKey) -> None:
    """If-Match / If-Unmodified-Since (412) and If-None-Match / If-Modified-Since (304)."""
    modified = key.last_modified.replace(microsecond=0)
    if_match, if_none = headers.get("If-Match"), headers.get("If-None-Match")
    if if_match is not None:
        if if_match.strip() != "*" and not any(same_etag(t, etag) for t in if_match.split(",")):
            raise precondition_failed("If-Match")
    else:
        since = parse_http_date(headers.get("If-Unmodified-Since"))
        if since is not None and modified > since:
            raise precondition_failed("If-Unmodified-Since")
    if if_none is not None:
        if if_none.strip() == "*" or any(same_etag(t, etag) for t in if_none.split(",")):
            raise NotModified()
    else:
        since = parse_http_date(headers.get("If-Modified-Since"))
        if since is not None and modified <= since:
            raise NotModified()


def _object_headers(key: FakeKey, etag: str) -> list[tuple[str, str]]:
    """ETag, Last-Modified, Content-Type, user metadata and other stored headers."""
    modified = key.last_modified.replace(tzinfo=timezone.utc)
    out = {
        "ETag": etag,
        "Last-Modified": format_datetime(modified, usegmt=True),
        "Accept-Ranges": "bytes",
    }
    if key.version_id != "null":
        out["x-amz-version-id"] = key.version_id
    if key.storage_class and key.storage_class != "STANDARD":
        out["x-amz-storage-class"] = key.storage_class
    for name, value in key.metadata.items():
        if not name.lower().startswith("x-amz-checksum-"):  # upload settings, not metadata
            out[name] = str(value)
    return list(out.items())


class _PreadBody:
    """Iterates a slice of a duplicated file descriptor; closing releases the descriptor."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self._fd, self._pos, self._left = fd, start, length

    def __iter__(self) -> Iterator[bytes]:
        try:
            while self._left > 0:
                data = os.pread(self._fd, min(CHUNK, self._left), self._pos)
                if not data:
                    return
                self._pos += len(data)
                self._left -= len(data)
                yield data
        finally:
            self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _take(
    backend: S3Backend,
    bucket: str,
    key_name: str,
    choose: Callable[[FakeKey], Callable[[str, int], tuple[int, int]]],
) -> tuple[FakeKey, Snapshot]:
    """Look the key up and snapshot it, retrying if it is replaced while we look."""
    for _ in range(5):
        key = current_key(backend, bucket, key_name)
        if key is None:
            break
        try:
            return key, snapshot(key, choose(key))
        except ValueError:
            continue
    raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=key_name)


def get_object(
    backend: S3Backend, bucket: str, key_name: str, headers: Mapping[str, str | None]
) -> Response:
    """Serve GetObject (with or without Range) from the stored value."""
    ranged: dict[str, tuple[int, int] | None] = {}

    def choose(key: FakeKey) -> Callable[[str, int], tuple[int, int]]:
        def inner(etag: str, size: int) -> tuple[int, int]:
            check_read_conditions(headers, etag, key)
            ranged["range"] = parse_range(headers.get("Range"), size)
            return ranged["range"] or (0, size)

        return inner

    try:
        key, snap = _take(backend, bucket, key_name, choose)
    except NotModified:
        key = current_key(backend, bucket, key_name)
        out = _object_headers(key, key.etag) if key else []
        out = [(name, value) for name, value in out if not name.lower().startswith("content-")]
        return Response(304, out, [])
    except S3Error as err:
        if err.status != 416:
            raise
        return err.response("GET", {"Content-Range": f"bytes */{err.extra['ActualObjectSize']}"})
    out = _object_headers(key, snap.etag)
    out.append(("Content-Length", str(snap.length)))
    if ranged["range"] is not None:
        end = snap.start + snap.length - 1
        out.append(("Content-Range", f"bytes {snap.start}-{end}/{snap.size}"))
        status = 206
    else:
        status = 200
        out += checksum_headers(key, headers, ranged=False)
    body = [snap.data] if snap.data is not None else _PreadBody(snap.fd, snap.start, snap.length)
    return Response(status, out, body)
