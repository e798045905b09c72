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
import functools
import hashlib
import logging
import math
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio
from awscrt import checksums

from cwfs.errors import Conflict, PreconditionFailed, StoreError
from cwfs.kept import UploadLedger
from cwfs.store import Checksum, ObjectStore, Response, WriteCondition
from cwfs.tasks import gather

log = logging.getLogger(__name__)

MAX_PARTS = 10_000
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


def _read(fd: int, offset: int, length: int, algorithm: str | None) -> tuple[bytes, Digest]:
    data = os.pread(fd, length, offset)
    if len(data) != length:
        raise StoreError(
            f"staged file has {len(data)} of {length} bytes at {offset}",
            op="Upload",
            code="ShortRead",
        )
    return data, _digest(data, algorithm)


def part_size_for(size: int, preferred: int) -> int:
    """The preferred part size, raised so that ``size`` fits in S3's 10,000 parts."""
    return min(max(preferred, math.ceil(size / MAX_PARTS)), MAX_PART_SIZE)


class Uploader:
    """Uploads staged files; at most ``concurrency`` parts are in memory at once."""

    def __init__(
        self,
        store: ObjectStore,
        part_size: int,
        concurrency: int,
        checksum: str,
        conflict_retries: int,
        ledger: UploadLedger | None = None,
    ) -> None:
        """``ledger`` records the multipart uploads open, for the next mount to abort if
        this one is killed before it completes or aborts them."""
        self._store = store
        self._ledger = ledger
        self._part_size = part_size
        self._algorithm = None if checksum == "off" else checksum
        self._conflict_retries = conflict_retries
        self._limiter = trio.CapacityLimiter(concurrency)

    async def upload(
        self, key: str, fd: int, size: int, condition: WriteCondition, metadata: dict[str, str]
    ) -> str:
        """Commit ``size`` bytes of ``fd`` to ``key`` under ``condition``; returns the new ETag.

        Raises PreconditionFailed when the key no longer matches ``condition``.
        """
        if size <= self._part_size:
            return await self._put(key, fd, size, condition, metadata)
        return await self._multipart(key, fd, size, condition, metadata)

    def _checksum(self, digest: Digest) -> Checksum | None:
        return (
            Checksum(self._algorithm, _b64(digest.crc)) if self._algorithm and digest.crc else None
        )

    async def _put(
        self, key: str, fd: int, size: int, condition: WriteCondition, metadata: dict[str, str]
    ) -> str:
        async with self._limiter:
            data, digest = await trio.to_thread.run_sync(_read, fd, 0, size, self._algorithm)
            checksum = self._checksum(digest)
            return await self._settle(
                key,
                f'"{digest.md5.hex()}"',
                checksum,
                lambda: self._store.put_object(key, data, condition, metadata, checksum),
            )

    async def _multipart(
        self, key: str, fd: int, size: int, condition: WriteCondition, metadata: dict[str, str]
    ) -> str:
        async def part(
            upload_id: str, number: int, offset: int, length: int
        ) -> tuple[dict[str, Any], Digest]:
            return await self._part(key, upload_id, fd, number, offset, length)

        return await self._assemble(
            key, size, self._part_size, condition, metadata, self._algorithm, part
        )

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

        async def part(
            upload_id: str, number: int, offset: int, length: int
        ) -> tuple[dict[str, Any], Digest]:
            result = await self._store.upload_part_copy(
                dest, upload_id, number, source, offset, offset + length - 1, source_etag
            )
            return {"PartNumber": number, "ETag": result["ETag"]}, Digest(
                bytes.fromhex(result["ETag"].strip('"')), None
            )

        return await self._assemble(dest, size, COPY_PART_SIZE, condition, metadata, None, part)

    async def _assemble(
        self,
        key: str,
        size: int,
        preferred_part_size: int,
        condition: WriteCondition | None,
        metadata: dict[str, str],
        algorithm: str | None,
        part: Callable[[str, int, int, int], Awaitable[tuple[dict[str, Any], Digest]]],
    ) -> str:
        """A multipart upload of ``size`` bytes whose parts ``part`` produces, in parallel.

        Completed under ``condition``; aborted if anything fails, so no parts linger.
        """
        part_size = part_size_for(size, preferred_part_size)
        ranges = [
            (number, offset, min(part_size, size - offset))
            for number, offset in enumerate(range(0, size, part_size), 1)
        ]
        upload_id = await self._store.create_multipart_upload(key, metadata, algorithm)
        if self._ledger is not None:
            self._ledger.opened(key, upload_id)
        log.debug("multipart upload of %r: %d parts of %d bytes", key, len(ranges), part_size)
        expected: str | None = None  # the ETag of the object, once the parts are sent
        try:
            parts = await gather(
                [functools.partial(part, upload_id, *r) for r in ranges], limiter=self._limiter
            )
            etag = hashlib.md5(b"".join(d.md5 for _, d in parts), usedforsecurity=False).hexdigest()
            checksum = None
            if algorithm:
                combined = _digest(b"".join(d.crc or b"" for _, d in parts), algorithm)
                checksum = Checksum(algorithm, f"{_b64(combined.crc or b'')}-{len(parts)}")
            part_list = [entry for entry, _ in parts]
            expected = f'"{etag}-{len(parts)}"'
            new_etag = await self._settle(
                key,
                expected,
                checksum,
                lambda: self._store.complete_multipart_upload(key, upload_id, part_list, condition),
            )
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                gone = await self._abort(key, upload_id)
                # Gone before the abort: a completion whose answers were all lost may be ours.
                if gone and expected and isinstance(exc, StoreError):
                    if await self._committed(key, expected):
                        return expected
            raise
        self._closed(upload_id)
        return new_etag

    async def _part(
        self, key: str, upload_id: str, fd: int, number: int, offset: int, length: int
    ) -> tuple[dict[str, Any], Digest]:
        data, digest = await trio.to_thread.run_sync(_read, fd, offset, length, self._algorithm)
        checksum = self._checksum(digest)
        response = await self._store.upload_part(key, upload_id, number, data, checksum)
        self._verify(key, checksum, response)
        entry = {"PartNumber": number, "ETag": response["ETag"]}
        if checksum is not None:
            entry[checksum.response_field] = checksum.value
        return entry, digest

    async def _abort(self, key: str, upload_id: str) -> bool:
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

    async def _committed(self, key: str, etag: str) -> bool:
        """Whether ``key`` holds ``etag``: the version our own request would have made."""
        current = await self._store.head_object(key)
        if current is None or current.etag != etag:
            return False
        log.info(
            "%r: a retried request found its own earlier attempt committed (ETag %s)", key, etag
        )
        return True

    def _closed(self, upload_id: str) -> None:
        if self._ledger is not None:
            self._ledger.closed(upload_id)

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
            log.error(
                "%r: the server's %s %s differs from ours %s",
                key,
                sent.algorithm,
                echoed,
                sent.value,
            )
            raise StoreError(f"{sent.algorithm} mismatch", op="Upload", key=key, code="BadDigest")
