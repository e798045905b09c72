"""RenameObject (``PUT /key?renameObject``) with CoreWeave semantics.

moto 5.2 treats the request as an empty PutObject, so the app routes it here first.
The rename is a metadata-only move of moto's key object (data, ETag, metadata, content
type and tags travel with it), done under the mutation lock so no other write, and no
listing, can see a half-done state.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime
from urllib.parse import unquote

from moto.s3.models import FakeKey, S3Backend

from .backend import current_key, get_bucket, same_etag
from .conditional import check_destination
from .responses import Response, S3Error, parse_http_date, precondition_failed

SOURCE_CONDITIONS = (
    "x-amz-rename-source-if-match",
    "x-amz-rename-source-if-none-match",
    "x-amz-rename-source-if-modified-since",
    "x-amz-rename-source-if-unmodified-since",
)
DEST_CONDITIONS = ("If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since")


class ClientTokens:
    """Remembers x-amz-client-token values so retried renames are idempotent."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._lock = threading.Lock()
        self._seen: OrderedDict[str, tuple[tuple[str | None, ...], bool]] = OrderedDict()
        self._capacity = capacity

    def check(self, token: str, params: tuple[str | None, ...]) -> bool:
        """True if this exact request already succeeded; 400 if the token was used otherwise."""
        with self._lock:
            seen = self._seen.get(token)
        if seen is None:
            return False
        if seen[0] != params:
            raise S3Error(
                400,
                "IdempotencyParameterMismatch",
                "The client token was already used with different request parameters",
            )
        return seen[1]

    def record(self, token: str, params: tuple[str | None, ...], succeeded: bool) -> None:
        with self._lock:
            self._seen[token] = (params, succeeded)
            self._seen.move_to_end(token)
            while len(self._seen) > self._capacity:
                self._seen.popitem(last=False)


def parse_rename_source(raw: str | None, bucket: str) -> str:
    """The source key from ``x-amz-rename-source`` (``[/]bucket/key``, URL-encoded)."""
    if not raw:
        raise S3Error(
            400,
            "InvalidArgument",
            "The x-amz-rename-source header is required",
            ArgumentName="x-amz-rename-source",
        )
    source_bucket, _, source_key = unquote(raw).lstrip("/").partition("/")
    if source_bucket != bucket:
        raise S3Error(
            400,
            "InvalidRequest",
            "RenameObject source and destination must be in the same bucket "
            f"(source bucket {source_bucket!r}, destination bucket {bucket!r})",
        )
    if not source_key:
        raise S3Error(
            400,
            "InvalidArgument",
            "x-amz-rename-source must be bucket/key",
            ArgumentName="x-amz-rename-source",
        )
    return source_key


def _check_source(key: FakeKey, headers: Mapping[str, str | None]) -> None:
    modified = key.last_modified.replace(microsecond=0)
    if_match = headers.get("x-amz-rename-source-if-match")
    if if_match is not None and not same_etag(if_match, key.etag):
        raise precondition_failed("x-amz-rename-source-if-match")
    if_none = headers.get("x-amz-rename-source-if-none-match")
    if if_none is not None and (if_none.strip() == "*" or same_etag(if_none, key.etag)):
        raise precondition_failed("x-amz-rename-source-if-none-match")
    _check_dates(
        modified,
        headers,
        "x-amz-rename-source-if-modified-since",
        "x-amz-rename-source-if-unmodified-since",
    )


def _check_destination_dates(existing: FakeKey | None, headers: Mapping[str, str | None]) -> None:
    if existing is None:
        return
    _check_dates(
        existing.last_modified.replace(microsecond=0),
        headers,
        "If-Modified-Since",
        "If-Unmodified-Since",
    )


def _check_dates(
    modified: datetime, headers: Mapping[str, str | None], if_modified: str, if_unmodified: str
) -> None:
    """The two date preconditions, read from the given header names."""
    since = parse_http_date(headers.get(if_modified))
    if since is not None and modified <= since:
        raise precondition_failed(if_modified)
    since = parse_http_date(headers.get(if_unmodified))
    if since is not None and modified > since:
        raise precondition_failed(if_unmodified)


def _move(backend: S3Backend, bucket_obj: object, key: FakeKey, dest: str) -> None:
    """Re-file moto's key object under the new name (no data copied), tags included."""
    keys = bucket_obj.keys  # type: ignore[attr-defined]
    old_arn = key.arn
    keys.detach(key.name)  # not keys.pop(): pop() would dispose the value we are keeping
    key.name = dest
    keys.setlist(dest, [key])  # disposes whatever the destination held before
    tags = backend.tagger.get_tag_dict_for_resource(old_arn)
    if tags:
        backend.tagger.delete_all_tags_for_resource(old_arn)
        backend.tagger.tag_resource(key.arn, [{"Key": k, "Value": v} for k, v in tags.items()])


def rename_object(
    backend: S3Backend,
    bucket: str,
    dest: str,
    headers: Mapping[str, str | None],
    tokens: ClientTokens,
) -> Response:
    """Perform RenameObject; call with the mutation lock held. Raises S3Error on refusal."""
    source = parse_rename_source(headers.get("x-amz-rename-source"), bucket)
    bucket_obj = get_bucket(backend, bucket)
    if bucket_obj.versioning_status is not None:
        raise S3Error(
            400,
            "InvalidRequest",
            "RenameObject is not supported on buckets that have had versioning enabled",
        )
    token = headers.get("x-amz-client-token")
    params = (bucket, dest, source) + tuple(
        headers.get(h) for h in SOURCE_CONDITIONS + DEST_CONDITIONS
    )
    if token and tokens.check(token, params):
        return Response(200, [("Content-Length", "0")], [])
    if token:
        tokens.record(token, params, succeeded=False)
    key = current_key(backend, bucket, source)
    if key is None:
        raise S3Error(404, "NoSuchKey", "The specified key does not exist.", Key=source)
    _check_source(key, headers)
    check_destination(backend, bucket, dest, headers)
    _check_destination_dates(current_key(backend, bucket, dest), headers)
    if source != dest:
        _move(backend, bucket_obj, key, dest)
    if token:
        tokens.record(token, params, succeeded=True)
    return Response(200, [("Content-Length", "0")], [])
