"""Checksums on moto's objects, the way AWS S3 handles them.

moto 5.2 accepts a wrong ``x-amz-checksum-*`` value, ignores one sent without
``x-amz-sdk-checksum-algorithm``, computes CRC32C as CRC32 without the optional
``crc32c`` package, and forgets the checksum on HEAD. So the middleware does the
checksum work itself around moto:

* :func:`body_checksum` (PutObject, UploadPart; outside any lock): decode an aws-chunked
  body, verify the header or trailer checksum against the bytes received (400 BadDigest
  before anything is written) and hand moto a plain body;
* :func:`prepare` (under the lock where the operation takes it): checks that must
  happen before moto runs, returning a :data:`Finish` step that stores the checksum on
  the object or part moto just wrote and puts it into the response.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from moto.s3.exceptions import S3ClientError
from moto.s3.models import FakeKey, FakeMultipart, S3Backend

from .backend import current_key, etag_of, same_etag
from .checksums import (
    ALGORITHMS,
    COMPOSITE,
    FULL_OBJECT,
    Checksum,
    bad_digest,
    composite,
    crc_digest,
    crc_update,
    decode_aws_chunked,
    decode_value,
    digest,
    encode,
    header_name,
    known_algorithm,
    supports_full_object,
    verified,
)
from .motocall import MotoReply
from .ops import EnvironHeaders, Target
from .responses import S3Error

#: What runs after moto answered 2xx, still under the operation's lock.
Finish = Callable[[MotoReply], None]

#: Where :func:`body_checksum` leaves the verified checksum for the finishing step.
ENVIRON_KEY = "cwfs.checksum"
_MODE = "HTTP_X_AMZ_CHECKSUM_MODE"


# ---------------------------------------------------------------- stored checksums --
def stored_checksum(key: FakeKey | None) -> Checksum | None:
    """The checksum moto's key (object or part) carries, if any."""
    if key is None or not key.checksum_algorithm or not key.checksum_value:
        return None
    return Checksum(
        key.checksum_algorithm.upper(),
        key.checksum_value,
        key.checksum_type or FULL_OBJECT,
        key.checksum_parts,
    )


def store(key: FakeKey, checksum: Checksum) -> None:
    """Record a checksum on moto's key, in moto's own fields (so copies keep it)."""
    key.checksum_algorithm, key.checksum_value = checksum.algorithm, checksum.value
    key.checksum_type, key.checksum_parts = checksum.type, checksum.parts


def checksum_headers(
    key: FakeKey, headers: Mapping[str, str | None], ranged: bool
) -> list[tuple[str, str]]:
    """Checksum response headers for a GET/HEAD: only with checksum mode, never for ranges."""
    checksum = stored_checksum(key)
    if (
        ranged
        or checksum is None
        or (headers.get("x-amz-checksum-mode") or "").upper() != "ENABLED"
    ):
        return []
    return [(checksum.header, checksum.qualified), ("x-amz-checksum-type", checksum.type)]


# ---------------------------------------------------------------- request bodies ----
def _is_aws_chunked(headers: Mapping[str, str | None]) -> bool:
    sha = headers.get("x-amz-content-sha256") or ""
    return sha.startswith("STREAMING-") or "aws-chunked" in (headers.get("Content-Encoding") or "")


def _claimed(
    headers: Mapping[str, str | None], trailers: dict[str, str]
) -> tuple[str | None, str | None]:
    """(algorithm, value) the client sent as a header or trailer; value None if only named."""
    values = {alg: v for alg in ALGORITHMS if (v := headers.get(header_name(alg))) is not None}
    trailer = (headers.get("x-amz-trailer") or "").strip().lower()
    if trailer:
        algorithm = known_algorithm(trailer.removeprefix("x-amz-checksum-"), "x-amz-trailer")
        if trailer not in trailers:
            raise S3Error(400, "InvalidRequest", f"The {trailer} trailer was not found in the body")
        values[algorithm] = trailers[trailer]
    if len(values) > 1:
        raise S3Error(
            400,
            "InvalidRequest",
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        )
    if values:
        return next(iter(values.items()))
    named = headers.get("x-amz-sdk-checksum-algorithm")
    return known_algorithm(named, "x-amz-sdk-checksum-algorithm"), None


def _hand_to_moto(environ: dict[str, Any], payload: bytes, checksum: Checksum | None) -> None:
    """Give moto the decoded payload and exactly one, verified, checksum header."""
    environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(payload), str(len(payload))
    for name in [k for k in environ if k.startswith("HTTP_X_AMZ_CHECKSUM_") and k != _MODE]:
        del environ[name]
    for name in ("HTTP_X_AMZ_TRAILER", "HTTP_X_AMZ_DECODED_CONTENT_LENGTH"):
        environ.pop(name, None)
    if str(environ.get("HTTP_X_AMZ_CONTENT_SHA256", "")).startswith("STREAMING-"):
        environ["HTTP_X_AMZ_CONTENT_SHA256"] = "UNSIGNED-PAYLOAD"
    encodings = [
        e
        for e in str(environ.pop("HTTP_CONTENT_ENCODING", "")).split(",")
        if e.strip() and e.strip() != "aws-chunked"
    ]
    if encodings:
        environ["HTTP_CONTENT_ENCODING"] = ",".join(encodings)
    if checksum is not None:
        environ["HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM"] = checksum.algorithm
        environ["HTTP_" + checksum.header.upper().replace("-", "_")] = checksum.value


def body_checksum(environ: dict[str, Any], body: bytes) -> Checksum | None:
    """Verify the checksum a PutObject/UploadPart carries against the body (BadDigest).

    A checksum only named by ``x-amz-sdk-checksum-algorithm`` is computed here (moto does
    the same); without any, None. The result is also left in ``environ[ENVIRON_KEY]``.
    """
    headers = EnvironHeaders(environ)
    payload, trailers = decode_aws_chunked(body) if _is_aws_chunked(headers) else (body, {})
    algorithm, claimed = _claimed(headers, trailers)
    checksum = None
    if algorithm is not None:
        checksum = (
            verified(algorithm, claimed, payload)
            if claimed is not None
            else Checksum(algorithm, encode(digest(algorithm, payload)))
        )
    _hand_to_moto(environ, payload, checksum)
    environ[ENVIRON_KEY] = checksum
    return checksum


# ---------------------------------------------------------------- multipart --------
def _upload(backend: S3Backend, bucket: str | None, upload_id: str) -> FakeMultipart | None:
    found = backend.buckets.get(bucket or "")
    return found.multiparts.get(upload_id) if found is not None else None


def upload_rule(multipart: FakeMultipart) -> tuple[str | None, str]:
    """(algorithm, checksum type) the upload was created with."""
    algorithm = multipart.metadata.get("x-amz-checksum-algorithm")
    return (
        algorithm.upper() if algorithm else None,
        (multipart.metadata.get("x-amz-checksum-type") or COMPOSITE).upper(),
    )


def _mismatch(expected: str, actual: str | None) -> S3Error:
    return S3Error(
        400,
        "InvalidRequest",
        "Checksum Type mismatch occurred, expected checksum "
        f"Type: {expected.lower()}, actual checksum Type: {(actual or 'null').lower()}",
    )


def _prepare_create(environ: dict[str, Any]) -> None:
    """Validate and default the upload's checksum algorithm and type (moto keeps both)."""
    headers = EnvironHeaders(environ)
    algorithm = known_algorithm(headers.get("x-amz-checksum-algorithm"), "x-amz-checksum-algorithm")
    kind = (headers.get("x-amz-checksum-type") or "").strip().upper()
    if algorithm is None:
        if kind:
            raise S3Error(
                400, "InvalidRequest", "x-amz-checksum-type requires x-amz-checksum-algorithm"
            )
        return
    kind = kind or (FULL_OBJECT if algorithm == "CRC64NVME" else COMPOSITE)
    if (
        kind not in (COMPOSITE, FULL_OBJECT)
        or (kind == COMPOSITE and algorithm == "CRC64NVME")
        or (kind == FULL_OBJECT and not supports_full_object(algorithm))
    ):
        raise S3Error(
            400,
            "InvalidRequest",
            f"The {kind} checksum type cannot be used with "
            f"the {algorithm.lower()} checksum algorithm.",
        )
    environ["HTTP_X_AMZ_CHECKSUM_ALGORITHM"], environ["HTTP_X_AMZ_CHECKSUM_TYPE"] = algorithm, kind


def _part_number(query: Mapping[str, list[str]]) -> int:
    try:
        return int(query.get("partNumber", ["0"])[0])
    except ValueError:
        return 0


def _prepare_upload_part(
    backend: S3Backend, target: Target, query: Mapping[str, list[str]], environ: dict[str, Any]
) -> Finish:
    """Parts of an upload created with an algorithm must carry that algorithm's checksum."""
    upload_id, number = query.get("uploadId", [""])[0], _part_number(query)
    checksum: Checksum | None = environ.get(ENVIRON_KEY)
    multipart = _upload(backend, target.bucket, upload_id)
    algorithm = upload_rule(multipart)[0] if multipart is not None else None
    if algorithm is not None and (checksum is None or checksum.algorithm != algorithm):
        raise _mismatch(algorithm, checksum.algorithm if checksum else None)

    def finish(reply: MotoReply) -> None:
        part = multipart.parts.get(number) if multipart is not None else None
        if checksum is not None and part is not None:
            store(part, checksum)
            reply.set_header(checksum.header, checksum.value)

    return finish


def _prepare_upload_part_copy(
    backend: S3Backend, target: Target, query: Mapping[str, list[str]], environ: dict[str, Any]
) -> Finish:
    """A copied part gets its upload's checksum computed over the bytes it copied."""
    multipart = _upload(backend, target.bucket, query.get("uploadId", [""])[0])
    algorithm = upload_rule(multipart)[0] if multipart is not None else None

    def finish(reply: MotoReply) -> None:
        part = multipart.parts.get(_part_number(query)) if multipart is not None else None
        if algorithm is None or part is None:
            return
        checksum = Checksum(algorithm, encode(digest(algorithm, part.value)))
        store(part, checksum)
        reply.set_xml_fields("CopyPartResult", {f"Checksum{algorithm}": checksum.value}, "Checksum")

    return finish


def _listed_parts(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    """(part number, ETag, {algorithm: checksum}) of a CompleteMultipartUpload body."""
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return []
    listed = []
    for part in (e for e in root if e.tag.rsplit("}", 1)[-1] == "Part"):
        fields = {e.tag.rsplit("}", 1)[-1]: (e.text or "").strip() for e in part}
        given = {
            name[len("Checksum") :].upper(): value
            for name, value in fields.items()
            if name.startswith("Checksum") and name[len("Checksum") :].upper() in ALGORITHMS
        }
        number = fields.get("PartNumber", "")
        listed.append((int(number) if number.isdigit() else 0, fields.get("ETag", ""), given))
    return listed


def _part_digest(part: FakeKey, number: int, algorithm: str, given: dict[str, str]) -> bytes:
    """The part's raw digest, after checking the one the Complete request lists for it."""
    own = stored_checksum(part)
    raw = (
        decode_value(algorithm, own.value)
        if own and own.algorithm == algorithm
        else digest(algorithm, part.value)
    )
    for named, value in given.items():
        if named != algorithm or value.strip() != encode(raw):
            raise S3Error(
                400,
                "InvalidPart",
                "One or more of the specified parts could not be "
                "found. The part may not have been uploaded, or the specified "
                "checksum may not match the part's checksum.",
                PartNumber=str(number),
            )
    return raw


def completion_checksum(multipart: FakeMultipart, body: bytes) -> Checksum | None:
    """The checksum the completed object will have; InvalidPart/InvalidRequest if parts disagree.

    None when the upload has no algorithm, or when a listed part is unknown (moto then
    answers InvalidPart itself).
    """
    algorithm, kind = upload_rule(multipart)
    if algorithm is None:
        return None
    digests, crc = [], 0
    for number, etag, given in _listed_parts(body):
        part = multipart.parts.get(number)
        if part is None or not same_etag(etag, etag_of(part)):
            return None
        if kind == COMPOSITE and algorithm not in given:
            raise S3Error(
                400,
                "InvalidRequest",
                f"The upload was created using a "
                f"{algorithm.lower()} checksum. The complete request must include the "
                f"checksum for each part. It was missing for part {number} in the request.",
            )
        digests.append(_part_digest(part, number, algorithm, given))
        if kind == FULL_OBJECT:
            crc = crc_update(algorithm, part.value, crc)
    if not digests:
        return None
    if kind == COMPOSITE:
        return composite(algorithm, digests)
    return Checksum(algorithm, encode(crc_digest(algorithm, crc)), FULL_OBJECT)


def _prepare_complete(
    backend: S3Backend, target: Target, query: Mapping[str, list[str]], environ: dict[str, Any]
) -> Finish:
    """Compute (and check) the object's checksum before moto completes the upload."""
    upload_id = query.get("uploadId", [""])[0]
    multipart = _upload(backend, target.bucket, upload_id)
    body = (
        environ["wsgi.input"].getvalue()
        if isinstance(environ.get("wsgi.input"), io.BytesIO)
        else b""
    )
    planned = completion_checksum(multipart, body) if multipart is not None else None
    claimed_algorithm, claimed = _claimed(EnvironHeaders(environ), {})
    if (
        planned is not None
        and claimed is not None
        and planned.type == FULL_OBJECT
        and claimed_algorithm == planned.algorithm
        and claimed.strip() != planned.value
    ):
        raise bad_digest(planned.algorithm)

    def finish(reply: MotoReply) -> None:
        key = current_key(backend, target.bucket or "", target.key or "")
        if key is None or key.multipart is None or key.multipart.id != upload_id:
            return
        if planned is not None:
            store(key, planned)
        checksum = stored_checksum(key) if upload_rule(key.multipart)[0] else None
        if checksum is not None:
            reply.set_xml_fields("CompleteMultipartUploadResult", checksum.xml_fields(), "Checksum")

    return finish


# ---------------------------------------------------------------- copies and reads --
def _copy_source(backend: S3Backend, headers: Mapping[str, str | None]) -> FakeKey | None:
    """The key ``x-amz-copy-source`` names (``[/]bucket/key[?versionId=]``), if it exists."""
    raw = urlsplit(headers.get("x-amz-copy-source") or "")
    bucket, _, key = unquote(raw.path).lstrip("/").partition("/")
    version = parse_qs(raw.query).get("versionId", [None])[0]
    try:
        found = backend.get_object(bucket, key, version_id=version)
    except S3ClientError:  # moto answers that itself when it runs the copy
        return None
    return found if isinstance(found, FakeKey) else None


def _prepare_copy(
    backend: S3Backend, target: Target, query: Mapping[str, list[str]], environ: dict[str, Any]
) -> Finish:
    """CopyObject keeps the source's checksum, or computes a newly requested algorithm."""
    headers = EnvironHeaders(environ)
    requested = known_algorithm(headers.get("x-amz-checksum-algorithm"), "x-amz-checksum-algorithm")
    environ.pop("HTTP_X_AMZ_CHECKSUM_ALGORITHM", None)  # moto's CRC32C would be a CRC32
    source = _copy_source(backend, headers)
    carried = stored_checksum(source)

    def finish(reply: MotoReply) -> None:
        dest = current_key(backend, target.bucket or "", target.key or "")
        checksum = (
            Checksum(requested, encode(digest(requested, dest.value)))
            if requested and dest is not None
            else carried
        )
        if dest is None or checksum is None:
            return
        store(dest, checksum)
        reply.set_xml_fields("CopyObjectResult", checksum.xml_fields(), "Checksum")

    return finish


def _prepare_put(
    backend: S3Backend, target: Target, query: Mapping[str, list[str]], environ: dict[str, Any]
) -> Finish:
    """Store the checksum :func:`body_checksum` verified on the object moto wrote."""
    checksum: Checksum | None = environ.get(ENVIRON_KEY)

    def finish(reply: MotoReply) -> None:
        key = current_key(backend, target.bucket or "", target.key or "")
        if checksum is not None and key is not None:
            store(key, checksum)
            reply.set_header(checksum.header, checksum.value)
            reply.set_header("x-amz-checksum-type", checksum.type)

    return finish


def _prepare_read(
    backend: S3Backend, target: Target, query: Mapping[str, list[str]], environ: dict[str, Any]
) -> Finish:
    """HEAD (and GETs left to moto): checksum headers as S3 sends them, or none."""
    headers = EnvironHeaders(environ)

    def finish(reply: MotoReply) -> None:
        reply.drop_headers("x-amz-checksum-")
        reply.drop_headers("x-amz-sdk-checksum-algorithm")
        key = current_key(backend, target.bucket or "", target.key or "")
        if key is None or not same_etag(reply.header("ETag") or "", etag_of(key)):
            return
        ranged = reply.status == 206 or "partNumber" in query or "versionId" in query
        reply.headers += checksum_headers(key, headers, ranged)

    return finish


_PREPARE: dict[
    str, Callable[[S3Backend, Target, Mapping[str, list[str]], dict[str, Any]], Finish]
] = {
    "PutObject": _prepare_put,
    "UploadPart": _prepare_upload_part,
    "UploadPartCopy": _prepare_upload_part_copy,
    "CompleteMultipartUpload": _prepare_complete,
    "CopyObject": _prepare_copy,
    "HeadObject": _prepare_read,
    "GetObject": _prepare_read,
}


def prepare(
    op: str,
    backend: S3Backend,
    target: Target,
    query: Mapping[str, list[str]],
    environ: dict[str, Any],
) -> Finish | None:
    """Checks to make before moto runs ``op``; returns the step to run after it, if any."""
    if op == "CreateMultipartUpload":
        _prepare_create(environ)
        return None
    step = _PREPARE.get(op)
    return step(backend, target, query, environ) if step is not None else None
