"""The object-store client: the only module that talks to S3 for the filesystem.

Its neighbours in the store layer also import boto3: `cwfs.credentials` builds the
session, `cwfs.preflight` probes the bucket once before a mount.

Every botocore call runs in a worker thread through one bounded helper
(`ObjectStore._call`), so the trio thread never blocks; botocore retries throttling,
5xx and connection errors with exponential back-off and jitter; whatever still fails is
typed here, in one place, by its S3 error code (`cwfs.errors.store_error`). HeadObject
and ListObjectsV2, sent by the thousand, go through `cwfs.wire` on trio sockets instead
(unless a proxy is configured), with the same retries and the same typed errors.
"""

from __future__ import annotations

import email.utils
import functools
import logging
import os
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar
from urllib.parse import quote

import botocore.config
import botocore.session
import botocore.utils
import trio
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectTimeoutError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
)

from cwfs.config import StoreSettings
from cwfs.credentials import (
    build_session,
    ca_bundle,
    s3_client,
    signing_credentials,
    uses_proxy,
)
from cwfs.errors import (
    ObjectMissing,
    ReadStopped,
    RenameUnsupported,
    StoreAccessDenied,
    StoreError,
    StoreTimeout,
    StoreUnavailable,
    store_error,
)
from cwfs.listxml import BadListing, parse_list_result
from cwfs.retry import Retrier
from cwfs.sigv4 import Signer
from cwfs.wire import Endpoint, WireClient, answer_error

log = logging.getLogger(__name__)

T = TypeVar("T")
Response = Mapping[str, Any]
"""A boto3 response (or a part of one), as the store's callers read it."""

DEFAULT_REGION = "us-east-1"
META_PREFIX = "x-amz-meta-"
DOWNLOAD_CHUNK = 1 << 20
READ_CHUNK = 1 << 20
EXPECT_CONTINUE_FROM = 1 << 20
FIRST_READ_CHUNK = 64 << 10  # a reader waiting for a GET's first bytes gets them sooner
SERVER_WORK_TIMEOUT = 120.0  # seconds of silence while the server assembles or copies an object


def _chunk_size(position: int, first: bool) -> int:
    """How much of a body to read at ``position``: up to the next `READ_CHUNK` boundary
    of the object, and no more than `FIRST_READ_CHUNK` for a body's first chunk."""
    size = READ_CHUNK - position % READ_CHUNK
    return min(size, FIRST_READ_CHUNK) if first else size


def _rename_unsupported(exc: StoreError) -> bool:
    if exc.code in ("NotImplemented", "MethodNotAllowed", "501", "405"):
        return True
    text = exc.message.lower()
    return exc.code in ("InvalidRequest", "InvalidArgument", "NotSupported") and (
        "support" in text or "version" in text
    )


@dataclass(frozen=True)
class ObjectInfo:
    """What a HeadObject or a listing tells about one object.

    ``metadata`` is the user metadata, or None when not known (listings carry none).
    """

    key: str
    size: int
    mtime: float
    etag: str | None
    metadata: dict[str, str] | None = None


@dataclass(frozen=True)
class ListPage:
    """One ListObjectsV2 page: objects, common prefixes and where to continue."""

    objects: list[ObjectInfo]
    prefixes: list[str]
    next_token: str | None


@dataclass(frozen=True)
class WriteCondition:
    """What the key must hold for a write to go ahead: nothing (``etag`` None) or that ETag."""

    etag: str | None

    def params(self) -> dict[str, str]:
        return {"IfMatch": self.etag} if self.etag else {"IfNoneMatch": "*"}


@dataclass(frozen=True)
class Checksum:
    """A checksum sent with an upload: algorithm name (``crc32c``) and base64 value."""

    algorithm: str
    value: str

    @property
    def response_field(self) -> str:
        """Where boto3 puts the server's checksum in a response, e.g. ``ChecksumCRC32C``."""
        return "Checksum" + self.algorithm.upper()


class FileRange:
    """Bytes ``offset .. offset+length`` of an open file as a request body. botocore and
    http.client read it a block at a time, so an upload never holds a whole part in
    memory; `ObjectStore` rewinds it for each attempt."""

    def __init__(self, fd: int, offset: int, length: int) -> None:
        self._fd, self._offset, self._length = fd, offset, length
        self._position = 0

    def __len__(self) -> int:
        return self._length

    def read(self, size: int | None = -1) -> bytes:
        left = self._length - self._position
        count = left if size is None or size < 0 else min(size, left)
        data = os.pread(self._fd, count, self._offset + self._position) if count else b""
        self._position += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Fill ``buffer`` straight from the file (the CRT signer hashes bodies so)."""
        view = memoryview(buffer)
        count = min(len(view), self._length - self._position)
        if count <= 0:
            return 0
        done = os.preadv(self._fd, [view[:count]], self._offset + self._position)
        self._position += done
        return done

    def seek(self, position: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}
        self._position = base[whence] + position
        return self._position

    def tell(self) -> int:
        return self._position


Body = bytes | FileRange


def _checksum_params(checksum: Checksum | None) -> dict[str, str]:
    return {checksum.response_field: checksum.value} if checksum else {}


def quoted(etag: str | None) -> str | None:
    """An ETag as S3 writes it, in double quotes: some servers (rclone serve s3) leave them
    out of listings but not of HeadObject, and the two must compare equal."""
    if etag is None or (etag.startswith('"') and etag.endswith('"')):
        return etag
    return f'"{etag}"'


def timestamp_seconds(value: str | datetime | None) -> float:
    """Seconds since the epoch of an S3 timestamp: ISO 8601 in bodies, RFC 7231 in headers.

    botocore is told to leave timestamps as text (`cwfs.credentials.build_session`): its
    general parser took half the CPU time of listing 10,000 keys.
    """
    if not value:
        return 0.0
    if isinstance(value, datetime):  # what botocore returns when left to parse it
        return value.timestamp()
    return _parse_timestamp(value)


@functools.lru_cache(maxsize=1024)
def _parse_timestamp(text: str) -> float:
    """Cached: objects written together share their second, a listing repeats it."""
    try:
        if text[:4].isdigit():
            return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
        return email.utils.parsedate_to_datetime(text).timestamp()
    except (ValueError, TypeError):
        return botocore.utils.parse_timestamp(text).timestamp()


def _no_expect_for_small_bodies(params: dict[str, Any], **_: Any) -> None:  # after botocore's own
    """Send a small body at once instead of waiting for ``100 Continue`` first.

    botocore asks for it on every upload: a round trip per small file, to save sending
    a few KiB the server might refuse. Like curl, keep it only from 1 MiB up.
    """
    headers = params["headers"]
    if (
        "Expect" in headers
        and (botocore.utils.determine_content_length(params["body"]) or 0) < EXPECT_CONTINUE_FROM
    ):
        del headers["Expect"]


def client_config(
    settings: StoreSettings, attempts: int, read_timeout: float | None = None
) -> botocore.config.Config:
    """botocore's settings for a client of ``settings``' endpoint: pool, timeouts (the
    read timeout ``read_timeout`` if given), and ``attempts`` per request (1 for
    `ObjectStore`, which retries by `cwfs.retry`)."""
    return botocore.config.Config(
        region_name=settings.region or DEFAULT_REGION,
        s3={"addressing_style": "path" if settings.addressing_style == "path" else "virtual"},
        retries={"mode": "standard", "total_max_attempts": attempts},
        max_pool_connections=settings.max_concurrency,
        connect_timeout=settings.connect_timeout,
        read_timeout=read_timeout or settings.read_timeout,
        tcp_keepalive=True,
        # cwfs computes and sends its own checksums (--checksum); botocore adds none.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def _read_body(
    response: Response,
    key: str,
    position: int,
    end: int,
    on_chunk: Callable[[int, bytes], bool] | None,
    chunks: list[bytes],
) -> None:
    """Read a ranged GET's body from ``position`` on, appending it to ``chunks`` as it
    comes (so that what arrived before a failure is kept)."""
    body, left, first = response["Body"], response["ContentLength"], position
    while left > 0 and (chunk := body.read(min(_chunk_size(position, position == first), left))):
        if on_chunk is not None and not on_chunk(position, chunk):
            body.close()
            raise ReadStopped(
                f"stopped at byte {position} of {end + 1}",
                op="GetObject",
                key=key,
                code="ReadStopped",
            )
        chunks.append(chunk)
        position += len(chunk)
        left -= len(chunk)
    if left:
        raise IncompleteReadError(
            actual_bytes=response["ContentLength"] - left,
            expected_bytes=response["ContentLength"],
        )


def _wire_client(
    settings: StoreSettings, session: botocore.session.Session, region: str
) -> WireClient | None:
    """The client for HeadObject and ListObjectsV2 (`cwfs.wire`), unless only botocore
    can send them: through a proxy."""
    if uses_proxy(settings.endpoint):
        log.info("every request through botocore: a proxy is configured for %s", settings.endpoint)
        return None
    tls = ssl.create_default_context(cafile=ca_bundle(session))
    if settings.is_coreweave:
        tls.minimum_version = ssl.TLSVersion.TLSv1_3
    return WireClient(
        Endpoint.parse(settings.endpoint, settings.bucket, settings.addressing_style != "path"),
        Signer(region),
        signing_credentials(session),
        limit=settings.max_concurrency,
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
        tls=tls,
    )


def _head_info(key: str, headers: Mapping[str, str]) -> ObjectInfo:
    """An `ObjectInfo` from HeadObject's answer headers."""
    metadata = {
        name[len(META_PREFIX) :]: value
        for name, value in headers.items()
        if name.startswith(META_PREFIX)
    }
    return ObjectInfo(
        key,
        int(headers.get("content-length", "0")),
        timestamp_seconds(headers.get("last-modified")),
        quoted(headers.get("etag")),
        metadata,
    )


class ObjectStore:
    """Async facade over one bucket (and an optional key prefix) of an S3 endpoint."""

    def __init__(self, settings: StoreSettings) -> None:
        self.bucket = settings.bucket
        session = build_session(settings)
        self._client = s3_client(session, settings.endpoint, client_config(settings, 1))
        self._client.meta.events.register_last("before-call.s3", _no_expect_for_small_bodies)
        # For requests the server answers only once it has assembled or copied a whole
        # object: a 4 GiB CompleteMultipartUpload kept the embedded server silent for
        # longer than --read-timeout, and each retry made it start over.
        slow = max(settings.read_timeout, SERVER_WORK_TIMEOUT)
        self._slow_client = s3_client(session, settings.endpoint, client_config(settings, 1, slow))
        self._limiter = trio.CapacityLimiter(settings.max_concurrency)
        self._retry = Retrier(settings.max_attempts, settings.timeout_attempts)
        self._wire = _wire_client(settings, session, self._client.meta.region_name)
        self.bytes_received = 0  # object data received by GetObject (``cwfs stats``)

    @property
    def retrier(self) -> Retrier:
        """The store's retry rules, which count its requests by operation and outcome."""
        return self._retry

    async def _call(self, op: str, key: str, method: Callable[..., T], **params: Any) -> T:
        """A boto3 call, retried by the rules of `cwfs.retry`."""
        return await self._retry.run(
            op, key, functools.partial(self._call_once, op, key, method, **params)
        )

    async def _call_once(self, op: str, key: str, method: Callable[..., T], **params: Any) -> T:
        """Run one boto3 call in a worker thread, bounded, and type its failure."""
        try:
            return await trio.to_thread.run_sync(
                functools.partial(method, Bucket=self.bucket, **params), limiter=self._limiter
            )
        except ClientError as exc:
            error, metadata = (
                exc.response.get("Error", {}),
                exc.response.get("ResponseMetadata", {}),
            )
            status = int(metadata.get("HTTPStatusCode") or 0)
            code = str(error.get("Code") or status or "Unknown")
            message = str(error.get("Message") or "")
            raise store_error(
                op, key, code, message, metadata.get("RequestId", ""), status
            ) from None
        except NoCredentialsError:
            raise StoreAccessDenied(
                "no credentials found", op=op, key=key, code="NoCredentials"
            ) from None
        except (ReadTimeoutError, ConnectTimeoutError) as exc:
            raise StoreTimeout(str(exc), op=op, key=key, code=type(exc).__name__) from None
        except BotoCoreError as exc:
            raise StoreUnavailable(str(exc), op=op, key=key, code=type(exc).__name__) from None

    async def _send(
        self, op: str, key: str, method: Callable[..., T], body: Body, **params: Any
    ) -> T:
        """A call with a request body, retried; a file range is rewound for each attempt."""

        async def attempt() -> T:
            if isinstance(body, FileRange):
                body.seek(0)
            return await self._call_once(op, key, method, Body=body, **params)

        return await self._retry.run(op, key, attempt)

    async def head_object(self, key: str) -> ObjectInfo | None:
        """The object's attributes, or None when there is no such key."""
        if (wire := self._wire) is not None:
            answer = await self._retry.run("HeadObject", key, lambda: wire.head(key))
            return None if answer is None else _head_info(key, answer.headers)
        try:
            resp = await self._call("HeadObject", key, self._client.head_object, Key=key)
        except ObjectMissing:
            return None
        return ObjectInfo(
            key,
            resp["ContentLength"],
            timestamp_seconds(resp.get("LastModified")),
            quoted(resp.get("ETag")),
            resp.get("Metadata", {}),
        )

    async def list_page(
        self,
        prefix: str,
        token: str | None = None,
        delimiter: str = "/",
        max_keys: int = 1000,
        start_after: str | None = None,
    ) -> ListPage:
        """One page of ListObjectsV2 below ``prefix``."""
        if self._wire is not None:
            return await self._list_page_on_wire(prefix, token, delimiter, max_keys, start_after)
        params: dict[str, Any] = {"Prefix": prefix, "MaxKeys": max_keys}
        if start_after:
            params["StartAfter"] = start_after
        if delimiter:
            params["Delimiter"] = delimiter
        if token:
            params["ContinuationToken"] = token
        resp = await self._call("ListObjectsV2", prefix, self._client.list_objects_v2, **params)
        objects = [
            ObjectInfo(
                o["Key"], o["Size"], timestamp_seconds(o.get("LastModified")), quoted(o.get("ETag"))
            )
            for o in resp.get("Contents", [])
        ]
        prefixes = [p["Prefix"] for p in resp.get("CommonPrefixes", [])]
        return ListPage(
            objects,
            prefixes,
            resp.get("NextContinuationToken") if resp.get("IsTruncated") else None,
        )

    async def _list_page_on_wire(
        self, prefix: str, token: str | None, delimiter: str, max_keys: int, start_after: str | None
    ) -> ListPage:
        wire = self._wire
        assert wire is not None
        query = {"list-type": "2", "prefix": prefix, "max-keys": str(max_keys)}
        query["encoding-type"] = "url"  # keys XML cannot carry, as botocore asks
        optional = {"delimiter": delimiter, "continuation-token": token, "start-after": start_after}
        query.update({name: value for name, value in optional.items() if value})
        answer = await self._retry.run(
            "ListObjectsV2", prefix, lambda: wire.get("ListObjectsV2", "", query)
        )
        if answer.status == 404:
            raise answer_error("ListObjectsV2", prefix, answer)
        try:
            result = parse_list_result(answer.body)
        except BadListing as exc:
            raise StoreUnavailable(
                str(exc), op="ListObjectsV2", key=prefix, code="BadListing"
            ) from None
        objects = [
            ObjectInfo(o.key, o.size, timestamp_seconds(o.last_modified), quoted(o.etag))
            for o in result.objects
        ]
        return ListPage(objects, result.prefixes, result.next_token)

    async def list_all(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object below ``prefix``, at any depth, a ListObjectsV2 page at a time."""
        token = None
        while True:
            page = await self.list_page(prefix, token, delimiter="")
            for info in page.objects:
                yield info
            if (token := page.next_token) is None:
                return

    async def get_range(
        self,
        key: str,
        start: int,
        end: int,
        etag: str | None,
        on_chunk: Callable[[int, bytes], bool] | None = None,
    ) -> list[bytes]:
        """Bytes ``start..end`` (inclusive) of the object, only if it still has ``etag``.

        The body comes in chunks, each read straight from the socket into its own
        buffer: a large read-ahead segment is neither zero-filled nor copied again, and
        no second copy of it exists even for a moment. Chunks end where the object's
        `READ_CHUNK` boundaries are, as the kernel's reads do, so most reads are
        answered from one chunk without a copy; the first is at most
        `FIRST_READ_CHUNK`. ``on_chunk(position, chunk)`` is called from the worker
        thread as each chunk arrives, so that its bytes can be used before the last
        ones come; when it returns False, nobody wants the rest: the GET stops there,
        closing its connection rather than downloading bytes for nothing, and
        `ReadStopped` is raised. A body that stops midway (a connection reset, a read
        timeout) is asked for again from the byte where it stopped, with the same
        ``If-Match``, up to ``--max-attempts`` GETs in all, with back-off.
        """
        params: dict[str, Any] = {"Key": key}
        if etag:
            params["IfMatch"] = etag
        chunks: list[bytes] = []  # kept across attempts: a cut body resumes where it stopped

        def fetch(**kwargs: Any) -> None:
            position = start + sum(map(len, chunks))
            if position > start:
                log.info("GetObject %r: resuming at byte %d of %d", key, position, end + 1)
            response = self._client.get_object(Range=f"bytes={position}-{end}", **kwargs)
            _read_body(response, key, position, end, on_chunk, chunks)

        try:
            await self._call("GetObject", key, fetch, **params)
        finally:
            self.bytes_received += sum(map(len, chunks))
        return chunks

    async def prestage(self, key: str) -> None:
        """HeadObject with ``Range: bytes=0-0``: asks LOTA to cache the whole object."""
        await self._call("HeadObject", key, self._client.head_object, Key=key, Range="bytes=0-0")

    async def download(self, key: str, path: str, etag: str | None) -> None:
        """Write the whole object into the local file ``path``, only if it still has ``etag``."""
        params: dict[str, Any] = {"Key": key}
        if etag:
            params["IfMatch"] = etag

        received = [0]  # by the worker thread, across attempts

        def fetch(**kwargs: Any) -> None:
            body = self._client.get_object(**kwargs)["Body"]
            with open(path, "wb") as out:
                for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                    out.write(chunk)
                    received[0] += len(chunk)

        try:
            await self._call("GetObject", key, fetch, **params)
        finally:
            self.bytes_received += received[0]

    async def put_object(
        self,
        key: str,
        body: Body,
        condition: WriteCondition,
        metadata: dict[str, str],
        checksum: Checksum | None,
    ) -> Response:
        """PutObject, conditional on what the key holds now (see `WriteCondition`)."""
        params = {"Key": key, "Metadata": metadata, **condition.params()}
        params.update(_checksum_params(checksum))
        return await self._send("PutObject", key, self._client.put_object, body, **params)

    async def create_multipart_upload(
        self, key: str, metadata: dict[str, str], algorithm: str | None
    ) -> str:
        """CreateMultipartUpload; when it had to be sent again, the upload an earlier
        attempt may have created unbeknownst to us (its answer lost) is aborted."""
        params: dict[str, Any] = {"Key": key, "Metadata": metadata}
        if algorithm:
            params["ChecksumAlgorithm"] = algorithm.upper()
        op, attempts, started = "CreateMultipartUpload", 0, time.monotonic()

        async def create() -> Response:
            nonlocal attempts
            attempts += 1
            return await self._call_once(op, key, self._client.create_multipart_upload, **params)

        upload_id: str = (await self._retry.run(op, key, create))["UploadId"]
        if attempts > 1:
            await self._abort_lost_uploads(key, upload_id, time.monotonic() - started)
        return upload_id

    async def _abort_lost_uploads(self, key: str, ours: str, within: float) -> None:
        """Abort the uploads of ``key`` begun up to ``within`` seconds before ``ours`` (by
        the store's clock): those of our earlier attempts. Another client's upload of
        the same key begun in those seconds would be aborted too; its completion then
        fails, and a cwfs client keeps its data."""
        answer = await self._call(
            "ListMultipartUploads", key, self._client.list_multipart_uploads, Prefix=key
        )
        begun = {
            upload["UploadId"]: timestamp_seconds(upload.get("Initiated"))
            for upload in answer.get("Uploads", [])
            if upload["Key"] == key
        }
        if ours not in begun:
            return
        for upload_id, at in begun.items():
            if upload_id != ours and begun[ours] - within - 1.0 <= at <= begun[ours]:
                log.info("aborting %r's multipart upload %s: its answer was lost", key, upload_id)
                await self.abort_multipart_upload(key, upload_id)

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: Body, checksum: Checksum | None
    ) -> Response:
        params = {"Key": key, "UploadId": upload_id, "PartNumber": number}
        params.update(_checksum_params(checksum))
        return await self._send("UploadPart", key, self._client.upload_part, body, **params)

    async def complete_multipart_upload(
        self,
        key: str,
        upload_id: str,
        parts: list[dict[str, Any]],
        condition: WriteCondition | None,
    ) -> Response:
        params = {
            "Key": key,
            "UploadId": upload_id,
            "MultipartUpload": {"Parts": parts},
            **(condition.params() if condition else {}),
        }
        return await self._call(
            "CompleteMultipartUpload", key, self._slow_client.complete_multipart_upload, **params
        )

    async def abort_multipart_upload(self, key: str, upload_id: str) -> bool:
        """Abort an upload; False when it was no longer open (NoSuchUpload: completed or
        aborted already, e.g. by this request's own first attempt, whose answer was lost)."""
        try:
            await self._call(
                "AbortMultipartUpload",
                key,
                self._client.abort_multipart_upload,
                Key=key,
                UploadId=upload_id,
            )
        except StoreError as exc:
            if exc.code == "NoSuchUpload":
                return False
            raise
        return True

    async def delete_object(self, key: str) -> None:
        await self._call("DeleteObject", key, self._client.delete_object, Key=key)

    async def copy_object(
        self,
        source: str,
        dest: str,
        source_etag: str | None,
        metadata: dict[str, str] | None,
        condition: WriteCondition | None,
    ) -> Response:
        """Server-side CopyObject (up to 5 GiB); ``metadata`` None keeps the source's."""
        params: dict[str, Any] = {"Key": dest, "CopySource": {"Bucket": self.bucket, "Key": source}}
        if source_etag:
            params["CopySourceIfMatch"] = source_etag
        if metadata is not None:
            params.update(MetadataDirective="REPLACE", Metadata=metadata)
        if condition is not None:
            params.update(condition.params())
        result = (await self._call("CopyObject", dest, self._slow_client.copy_object, **params))[
            "CopyObjectResult"
        ]
        return {**result, "ETag": quoted(result.get("ETag"))}  # from the body, as listings

    async def upload_part_copy(
        self,
        dest: str,
        upload_id: str,
        number: int,
        source: str,
        first: int,
        last: int,
        source_etag: str | None,
    ) -> Response:
        params: dict[str, Any] = {
            "Key": dest,
            "UploadId": upload_id,
            "PartNumber": number,
            "CopySource": {"Bucket": self.bucket, "Key": source},
            "CopySourceRange": f"bytes={first}-{last}",
        }
        if source_etag:
            params["CopySourceIfMatch"] = source_etag
        return (
            await self._call("UploadPartCopy", dest, self._slow_client.upload_part_copy, **params)
        )["CopyPartResult"]

    async def rename_object(
        self, source: str, dest: str, no_replace: bool, client_token: str
    ) -> None:
        """RenameObject: one atomic request; the token makes retries of it idempotent.

        Raises RenameUnsupported when the store answers that it cannot rename here.
        """
        params: dict[str, Any] = {
            "Key": dest,
            # botocore does not URL-encode RenameSource (it does CopySource).
            "RenameSource": quote(f"{self.bucket}/{source}", safe="/"),
            "ClientToken": client_token,
        }
        if no_replace:
            params["DestinationIfNoneMatch"] = "*"
        try:
            await self._call("RenameObject", dest, self._slow_client.rename_object, **params)
        except StoreError as exc:
            if _rename_unsupported(exc):
                raise exc.retyped(RenameUnsupported) from None
            raise

    async def versioning_status(self) -> str | None:
        """'Enabled' or 'Suspended' once a bucket has had versioning, else None."""
        try:
            resp = await self._call("GetBucketVersioning", "", self._client.get_bucket_versioning)
        except StoreAccessDenied as exc:
            log.warning(
                "cannot read the versioning state of bucket %r (%s): assuming it never had "
                "versioning",
                self.bucket,
                exc.context(),
            )
            return None
        return resp.get("Status")

    async def list_buckets(self) -> list[str]:
        """The names of the buckets the credentials own (ListBuckets, a page at a time;
        a store of any bucket can ask)."""
        names: list[str] = []
        token = ""

        def page(**_: Any) -> Any:  # ListBuckets names no bucket
            if token:
                return self._client.list_buckets(ContinuationToken=token)
            return self._client.list_buckets()

        while True:
            answer = await self._call("ListBuckets", "", page)
            names += [bucket["Name"] for bucket in answer.get("Buckets", [])]
            if not (token := answer.get("ContinuationToken", "")):
                return names

    async def bucket_region(self, bucket: str) -> str | None:
        """The region (CoreWeave: availability zone) ``bucket`` is in, from
        GetBucketLocation; None for the default region."""

        def locate(**_: Any) -> str | None:
            answer = self._client.get_bucket_location(Bucket=bucket)
            return answer.get("LocationConstraint") or None

        return await self._call("GetBucketLocation", bucket, locate)
