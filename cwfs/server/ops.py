"""Work out what an incoming S3 request is: bucket, key, addressing style, operation name.

Everything else in the server (counting, faults, locking, our own handlers) keys off the
operation name, so it is derived once per request here, from the method, the target
(path or Host), the query string and a few headers, the way S3 itself dispatches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

#: Host suffixes that mean "virtual-hosted": ``<bucket>.localhost:PORT``.
DEFAULT_VHOST_SUFFIXES: tuple[str, ...] = ("localhost",)


@dataclass(frozen=True)
class Target:
    """Where a request points: bucket (None for the service), key (None for the bucket)."""

    bucket: str | None
    key: str | None
    virtual: bool
    raw_path: str
    raw_query: str


def environ_header(environ: Mapping[str, object], name: str) -> str | None:
    """A request header from a WSGI environ (CONTENT_TYPE/LENGTH have no HTTP_ prefix)."""
    key = name.upper().replace("-", "_")
    if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        key = "HTTP_" + key
    value = environ.get(key)
    return value if isinstance(value, str) else None


def _wsgi_str(value: str) -> str:
    """Undo PEP 3333's latin-1 transport of raw bytes in environ strings."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def parse_target(
    environ: Mapping[str, object], vhost_suffixes: tuple[str, ...] = DEFAULT_VHOST_SUFFIXES
) -> Target:
    """Bucket and key of a request, virtual-hosted or path style.

    Uses the raw request URI (which may be absolute-form when the client treats us as a
    proxy) so that percent-encoded key characters survive exactly once-decoded.
    """
    raw_uri = _wsgi_str(str(environ.get("RAW_URI") or environ.get("PATH_INFO") or "/"))
    if "://" in raw_uri.split("?", 1)[0]:
        parts = urlsplit(raw_uri)
        raw_path, raw_query = parts.path or "/", parts.query
    else:
        raw_path, _, raw_query = raw_uri.partition("?")
    host = (environ_header(environ, "Host") or "").lower()
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    for suffix in vhost_suffixes:
        if hostname.endswith("." + suffix) and len(hostname) > len(suffix) + 1:
            bucket = hostname[: -len(suffix) - 1]
            key = unquote(raw_path[1:]) if len(raw_path) > 1 else None
            return Target(bucket, key, True, raw_path, raw_query)
    segments = raw_path.lstrip("/").split("/", 1)
    bucket = unquote(segments[0]) or None
    key = unquote(segments[1]) if len(segments) > 1 and segments[1] else None
    return Target(bucket, key, False, raw_path, raw_query)


def parse_query(raw_query: str) -> dict[str, list[str]]:
    """Query parameters, keeping value-less flags like ``?uploads`` or ``?renameObject``."""
    return parse_qs(raw_query, keep_blank_values=True)


# (method, level) -> ordered (query flag, operation) pairs; the first flag present wins.
_BUCKET_QUERY_OPS: dict[str, tuple[tuple[str, str], ...]] = {
    "GET": (
        ("list-type", "ListObjectsV2"),
        ("uploads", "ListMultipartUploads"),
        ("versioning", "GetBucketVersioning"),
        ("location", "GetBucketLocation"),
        ("versions", "ListObjectVersions"),
        ("acl", "GetBucketAcl"),
        ("tagging", "GetBucketTagging"),
        ("policy", "GetBucketPolicy"),
        ("cors", "GetBucketCors"),
        ("lifecycle", "GetBucketLifecycleConfiguration"),
        ("encryption", "GetBucketEncryption"),
        ("object-lock", "GetObjectLockConfiguration"),
    ),
    "PUT": (
        ("versioning", "PutBucketVersioning"),
        ("tagging", "PutBucketTagging"),
        ("acl", "PutBucketAcl"),
        ("policy", "PutBucketPolicy"),
        ("cors", "PutBucketCors"),
        ("lifecycle", "PutBucketLifecycleConfiguration"),
        ("encryption", "PutBucketEncryption"),
    ),
    "DELETE": (
        ("tagging", "DeleteBucketTagging"),
        ("policy", "DeleteBucketPolicy"),
        ("cors", "DeleteBucketCors"),
        ("lifecycle", "DeleteBucketLifecycle"),
        ("encryption", "DeleteBucketEncryption"),
    ),
    "POST": (("delete", "DeleteObjects"),),
}
_BUCKET_DEFAULT_OPS = {
    "GET": "ListObjects",
    "PUT": "CreateBucket",
    "DELETE": "DeleteBucket",
    "HEAD": "HeadBucket",
}

_KEY_QUERY_OPS: dict[str, tuple[tuple[str, str], ...]] = {
    "GET": (
        ("uploadId", "ListParts"),
        ("tagging", "GetObjectTagging"),
        ("acl", "GetObjectAcl"),
        ("attributes", "GetObjectAttributes"),
        ("legal-hold", "GetObjectLegalHold"),
        ("retention", "GetObjectRetention"),
    ),
    "PUT": (
        ("renameObject", "RenameObject"),
        ("tagging", "PutObjectTagging"),
        ("acl", "PutObjectAcl"),
        ("retention", "PutObjectRetention"),
        ("legal-hold", "PutObjectLegalHold"),
    ),
    "DELETE": (("uploadId", "AbortMultipartUpload"), ("tagging", "DeleteObjectTagging")),
    "POST": (
        ("uploads", "CreateMultipartUpload"),
        ("uploadId", "CompleteMultipartUpload"),
        ("restore", "RestoreObject"),
        ("select", "SelectObjectContent"),
    ),
}
_KEY_DEFAULT_OPS = {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}


def operation_name(
    method: str, target: Target, query: Mapping[str, list[str]], environ: Mapping[str, object]
) -> str:
    """The S3 API operation name of a request, or "Other" when it is not recognised."""
    method = method.upper()
    if target.bucket is None:
        return "ListBuckets" if method == "GET" else "Other"
    if target.key is None:
        for flag, op in _BUCKET_QUERY_OPS.get(method, ()):
            if flag in query:
                return op
        return _BUCKET_DEFAULT_OPS.get(method, "Other")
    has_copy_source = environ_header(environ, "x-amz-copy-source") is not None
    if method == "PUT" and "uploadId" in query and "partNumber" in query:
        return "UploadPartCopy" if has_copy_source else "UploadPart"
    for flag, op in _KEY_QUERY_OPS.get(method, ()):
        if flag in query:
            return op
    if method == "PUT":
        return "CopyObject" if has_copy_source else "PutObject"
    return _KEY_DEFAULT_OPS.get(method, "Other")


class EnvironHeaders(Mapping[str, str]):
    """Read-only, case-insensitive view of the request headers in a WSGI environ."""

    def __init__(self, environ: Mapping[str, object]) -> None:
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        value = environ_header(self._environ, name)
        if value is None:
            raise KeyError(name)
        return value

    def __iter__(self) -> Iterator[str]:
        for key in self._environ:
            if isinstance(key, str) and key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
                yield key.replace("_", "-").title()

    def __len__(self) -> int:
        return sum(1 for _ in self)
