"""Committing a staged file to the store: one conditional PutObject, or a multipart upload.

Every upload is conditional: ``If-None-Match: *`` for a file that did not exist,
``If-Match: <etag>`` for one that replaces a known version, on PutObject and on
CompleteMultipartUpload alike. 409 ConditionalRequestConflict is retried with back-off;
a 412 is first checked against what the key now holds, because a retried request whose
earlier attempt had in fact succeeded (response lost) also gets 412. Each part and
object carries a CRC checksum computed here, and the server's echo is compared with it.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import trio
from awscrt import checksums

from cwfs.errors import Conflict, PreconditionFailed, StoreError
from cwfs.kept import UploadLedger
from cwfs.store import Body, Checksum, FileRange, ObjectStore, Response, WriteCondition
from cwfs.streaming import MAX_PARTS, Part, PartStream
from cwfs.tasks import gather

log = logging.getLogger(__name__)

DIGEST_CHUNK = 1 << 20
STREAMED_BODY = 1 << 20  # smaller bodies are read whole: one send with the headers
MAX_PART_SIZE = 5 << 30
MAX_COPY_SIZE = 5 << 30  # the largest single CopyObject
COPY_PART_SIZE = 1 << 30  # copies move no data through us: use few, large parts
_CRC = {"crc32c": (checksums.crc32c, 4), "crc64nvme": (checksums.crc64nvme, 8)}


@dataclass(frozen=True)
class Digest:
    """What we know of bytes we send: their MD5 (the S3 ETag) and CRC (raw digests)."""

    md5: bytes
    crc: bytes | None


def _digest(data: bytes, algorithm: str | None) -> Digest:
    crc = None
    if algorithm is not None:
        function, width = _CRC[algorithm]
        crc = function(data).to_bytes(width, "big")
    return Digest(hashlib.md5(data, usedforsecurity=False).digest(), crc)


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _read_all(fd: int, size: int) -> bytes:
    data = os.pread(fd, size, 0)
    if len(data) != size:
        raise StoreError(
            f"staged file has {len(data)} of {size} bytes", op="Upload", code="ShortRead"
        )
    return data


def _chunks(fd: int, offset: int, length: int) -> Iterator[bytes]:
    """``length`` bytes of ``fd`` at ``offset``, a chunk at a time."""
    done = 0
    while done < length:
        chunk = os.pread(fd, min(DIGEST_CHUNK, length - done), offset + done)
        if not chunk:
            raise StoreError(
                f"staged file has {done} of {length} bytes at {offset}",
                op="Upload",
                code="ShortRead",
            )
        yield chunk
        done += len(chunk)


def _digest_range(fd: int, offset: int, length: int, algorithm: str | None) -> Digest:
    """MD5 and CRC of ``length`` bytes of ``fd`` at ``offset``, read a chunk at a time."""
    md5 = hashlib.md5(usedforsecurity=False)
    function, width = _CRC[algorithm] if algorithm else (None, 0)
    crc = 0
    for chunk in _chunks(fd, offset, length):
        md5.update(chunk)
        if function is not None:
            crc = function(chunk, crc)
    return Digest(md5.digest(), crc.to_bytes(width, "big") if function is not None else None)


def _crc_range(fd: int, offset: int, length: int, algorithm: str) -> bytes:
    """The CRC of ``length`` bytes of ``fd`` at ``offset``: a part needs no MD5 of ours
    (the server's answer gives it), and the CRC is a tenth of the MD5's CPU time."""
    function, width = _CRC[algorithm]
    crc = 0
    for chunk in _chunks(fd, offset, length):
        crc = function(chunk, crc)
    return crc.to_bytes(width, "big")


def _multipart_etag(entries: list[dict[str, Any]]) -> str | None:
    """The ETag S3 gives a multipart object: the MD5 of its parts' MD5s (the ETags the
    server gave them), and their count; None if a part's ETag is no MD5."""
    try:
        md5s = b"".join(bytes.fromhex(entry["ETag"].strip('"')) for entry in entries)
    except ValueError:
        return None
    return f'"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(entries)}"'


def part_size_for(size: int, preferred: int) -> int:
    """The preferred part size, raised so that ``size`` fits in S3's 10,000 parts."""
    return min(max(preferred, math.ceil(size / MAX_PARTS)), MAX_PART_SIZE)


class Uploader:
    """Uploads staged files from disk, part by part: at most ``concurrency`` parts are
    in flight over the mount, each read from its file as it is sent (`FileRange`), never
    whole in memory."""

    def __init__(
        self,
        store: ObjectStore,
        part_size: int,
        concurrency: int,
        checksum: str,
        conflict_retries: int,
        ledger: UploadLedger | None = None,
        nursery: trio.Nursery | None = None,
    ) -> None:
        """``ledger`` records the multipart uploads open, for the next mount to abort if
        this one is killed before it completes or aborts them; ``nursery`` runs the
        parts files being written send in the background (`cwfs.streaming`)."""
        self._store = store
        self._ledger = ledger
        self._nursery = nursery
        self.part_size = part_size
        self._algorithm = None if checksum == "off" else checksum
        self._conflict_retries = conflict_retries
        self.limiter = trio.CapacityLimiter(concurrency)
        self.in_flight = self.completed = self.failed = 0  # commits of files (``cwfs stats``)

    @property
    def streams(self) -> bool:
        """Whether files being written send their parts while they are written."""
        return self._nursery is not None

    @contextlib.contextmanager
    def counted(self) -> Iterator[None]:
        """Count one file's commit: in flight, then completed or failed."""
        self.in_flight += 1
        try:
            yield
        except BaseException:
            self.failed += 1
            raise
        else:
            self.completed += 1
        finally:
            self.in_flight -= 1

    def stream(self, key: str, fd: int, metadata: dict[str, str]) -> PartStream:
        return PartStream(self, key, fd, self.part_size, metadata)

    def spawn(self, function: Callable[..., Awaitable[None]], *args: Any) -> bool:
        """Run ``function(*args)`` in the background; False once the mount is going."""
        try:
            assert self._nursery is not None
            self._nursery.start_soon(function, *args)
        except RuntimeError:
            return False
        return True

    async def upload(
        self, key: str, fd: int, size: int, condition: WriteCondition, metadata: dict[str, str]
    ) -> str:
        """Commit ``size`` bytes of ``fd`` to ``key`` under ``condition``; returns the new ETag.

        Raises PreconditionFailed when the key no longer matches ``condition``.
        """
        if size <= self.part_size:
            return await self._put(key, fd, size, condition, metadata)
        stream = PartStream(self, key, fd, part_size_for(size, self.part_size), metadata)
        return await stream.finish(size, condition)

    def _checksum(self, digest: Digest) -> Checksum | None:
        return (
            Checksum(self._algorithm, _b64(digest.crc)) if self._algorithm and digest.crc else None
        )

    async def _put(
        self, key: str, fd: int, size: int, condition: WriteCondition, metadata: dict[str, str]
    ) -> str:
        async with self.limiter:
            body: Body
            if size < STREAMED_BODY:  # small: one read, sent with the headers in one go
                body = await trio.to_thread.run_sync(_read_all, fd, size)
                digest = _digest(body, self._algorithm)
            else:
                digest = await trio.to_thread.run_sync(_digest_range, fd, 0, size, self._algorithm)
                body = FileRange(fd, 0, size)
            checksum = self._checksum(digest)
            return await self._settle(
                key,
                f'"{digest.md5.hex()}"',
                checksum,
                lambda: self._store.put_object(key, body, condition, metadata, checksum),
            )

    async def create(self, key: str, metadata: dict[str, str], checksummed: bool = True) -> str:
        """CreateMultipartUpload, recorded in the ledger until completed or aborted."""
        algorithm = self._algorithm if checksummed else None
        upload_id = await self._store.create_multipart_upload(key, metadata, algorithm)
        if self._ledger is not None:
            self._ledger.opened(key, upload_id)
        log.debug("multipart upload of %r begun", key)
        return upload_id

    async def send_part(
        self, key: str, upload_id: str, fd: int, number: int, offset: int, length: int
    ) -> Part:
        """UploadPart of ``length`` bytes of ``fd`` at ``offset``: its CRC is computed
        first, a chunk at a time, then the bytes go from the file to the socket."""
        async with self.limiter:
            checksum = None
            if self._algorithm:
                crc = await trio.to_thread.run_sync(_crc_range, fd, offset, length, self._algorithm)
                checksum = Checksum(self._algorithm, _b64(crc))
            body = FileRange(fd, offset, length)
            response = await self._store.upload_part(key, upload_id, number, body, checksum)
        self._verify(key, checksum, response)
        entry = {"PartNumber": number, "ETag": response["ETag"]}
        if checksum is not None:
            entry[checksum.response_field] = checksum.value
        return entry

    async def complete(
        self, key: str, upload_id: str, parts: list[Part], condition: WriteCondition | None
    ) -> str:
        """Complete ``upload_id`` with ``parts`` under ``condition``; the new ETag. On a
        failure the upload is aborted, unless it turns out our completion took effect."""
        expected = _multipart_etag(parts)
        checksum = self._combined_checksum(parts)
        try:
            etag = await self._settle(
                key,
                expected,
                checksum,
                lambda: self._store.complete_multipart_upload(key, upload_id, parts, condition),
            )
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                gone = await self.abort(key, upload_id)
                # Gone before the abort: a completion whose answers were all lost may be ours.
                if (
                    gone
                    and expected is not None
                    and isinstance(exc, StoreError)
                    and await self._committed(key, expected)
                ):
                    return expected
            raise
        self._closed(upload_id)
        return etag

    def _combined_checksum(self, parts: list[Part]) -> Checksum | None:
        """The checksum of a multipart object: the CRC of its parts' CRCs, and their count."""
        if not self._algorithm:
            return None
        field = Checksum(self._algorithm, "").response_field
        if not all(field in part for part in parts):
            return None
        function, width = _CRC[self._algorithm]
        crc = function(b"".join(base64.b64decode(part[field]) for part in parts))
        return Checksum(self._algorithm, f"{_b64(crc.to_bytes(width, 'big'))}-{len(parts)}")

    async def copy(
        self,
        source: str,
        dest: str,
        size: int,
        source_etag: str | None,
        metadata: dict[str, str] | None,
        condition: WriteCondition | None,
    ) -> str:
        """Server-side copy of ``source`` (still at ``source_etag``) to ``dest``; returns the new ETag.

        ``metadata`` None keeps the source's (for copies over 5 GiB, which are multipart,
        it is read from the source first). ``condition`` None replaces any destination.
        """
        if size <= MAX_COPY_SIZE:
            return await self._settle(
                dest,
                None,
                None,
                lambda: self._store.copy_object(source, dest, source_etag, metadata, condition),
            )
        if metadata is None:
            head = await self._store.head_object(source)
            metadata = (head.metadata or {}) if head else {}
        part_size = part_size_for(size, COPY_PART_SIZE)

        async def part(number: int, offset: int) -> Part:
            last = min(offset + part_size, size) - 1
            result = await self._store.upload_part_copy(
                dest, upload_id, number, source, offset, last, source_etag
            )
            return {"PartNumber": number, "ETag": result["ETag"]}

        upload_id = await self.create(dest, metadata, checksummed=False)
        offsets = enumerate(range(0, size, part_size), 1)
        try:
            parts = await gather(
                [functools.partial(part, n, o) for n, o in offsets], limiter=self.limiter
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.abort(dest, upload_id)
            raise
        return await self.complete(dest, upload_id, parts, condition)

    async def abort(self, key: str, upload_id: str) -> bool:
        """Abort an upload, so that no parts linger; True when it had gone already
        (completed or aborted), False when aborted here or left to the next mount."""
        try:
            aborted = await self._store.abort_multipart_upload(key, upload_id)
        except StoreError as exc:
            log.warning("could not abort the multipart upload %s of %r: %s", upload_id, key, exc)
            return False  # the next mount or `cwfs recover` aborts it
        if aborted:
            log.info("aborted the multipart upload of %r", key)
        else:
            log.info("the multipart upload of %r was no longer open (completed or aborted)", key)
        self._closed(upload_id)
        return not aborted

    def _closed(self, upload_id: str) -> None:
        if self._ledger is not None:
            self._ledger.closed(upload_id)

    async def _committed(self, key: str, etag: str) -> bool:
        """Whether ``key`` holds ``etag``: the version our own request would have made."""
        current = await self._store.head_object(key)
        if current is None or current.etag != etag:
            return False
        log.info(
            "%r: a retried request found its own earlier attempt committed (ETag %s)", key, etag
        )
        return True

    async def _settle(
        self,
        key: str,
        etag: str | None,
        checksum: Checksum | None,
        call: Callable[[], Awaitable[Response]],
    ) -> str:
        """Make the committing request, retrying 409s and recognising our own earlier success;
        returns the new ETag.

        ``etag`` is what the key holds if our request took effect (None: unknown).
        """
        for attempt in range(self._conflict_retries + 1):
            try:
                response = await call()
            except Conflict:
                if attempt == self._conflict_retries:
                    raise
                delay = min(0.05 * 2**attempt, 2.0) * (0.5 + random.random())
                log.info("%r: ConditionalRequestConflict, retrying in %.2fs", key, delay)
                await trio.sleep(delay)
                continue
            except StoreError as exc:
                # A retry of a request that had committed sees 412 (its own write fails
                # the condition) or, for CompleteMultipartUpload, NoSuchUpload.
                lost = isinstance(exc, PreconditionFailed) or exc.code == "NoSuchUpload"
                if lost and etag is not None and await self._committed(key, etag):
                    return etag
                raise
            self._verify(key, checksum, response)
            new_etag: str = response["ETag"]
            return new_etag
        raise AssertionError("unreachable")

    @staticmethod
    def _verify(key: str, sent: Checksum | None, response: Response) -> None:
        if sent is None:
            return
        echoed = response.get(sent.response_field)
        if echoed is None:
            log.debug("%r: the server returned no %s to compare", key, sent.algorithm)
        elif echoed != sent.value:
            answer = response.get("ResponseMetadata", {})
            raise StoreError(
                f"the server's {sent.algorithm} {echoed} differs from ours {sent.value}",
                op="Upload",
                key=key,
                code="BadDigest",
                status=answer.get("HTTPStatusCode", 0),
                request_id=answer.get("RequestId", ""),
            )
