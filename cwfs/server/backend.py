"""Direct access to the in-process moto S3 backend.

Our handlers (rename, ranged GET, seeding, condition checks) work on moto's objects
themselves instead of going through HTTP, so that they can be atomic and zero-copy.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import FakeKey, S3Backend, s3_backends

from .responses import S3Error

DEFAULT_REGION = "us-east-1"


def s3_backend(account_id: str = DEFAULT_ACCOUNT_ID) -> S3Backend:
    """The backend moto's S3 app serves for requests signed by an unknown access key."""
    return s3_backends[account_id]["aws"]


def get_bucket(backend: S3Backend, bucket: str) -> Any:
    """The bucket, or NoSuchBucket (404) as S3 would answer."""
    found = backend.buckets.get(bucket)
    if found is None:
        raise S3Error(404, "NoSuchBucket", "The specified bucket does not exist", BucketName=bucket)
    return found


def current_key(backend: S3Backend, bucket: str, key: str) -> FakeKey | None:
    """The live (latest, not delete-marker) version of a key, or None."""
    found = get_bucket(backend, bucket).keys.get(key)
    return found if isinstance(found, FakeKey) else None


def ensure_bucket(backend: S3Backend, bucket: str, region: str = DEFAULT_REGION) -> None:
    """Create the bucket unless it already exists."""
    if bucket not in backend.buckets:
        backend.create_bucket(bucket, region)


def etag_of(key: FakeKey) -> str:
    """The key's quoted ETag, computed under the key's lock.

    moto computes a missing ETag lazily by seeking in the value buffer without taking
    the key lock, which would interleave with our positioned reads; doing it here first
    makes every later access a cached string.
    """
    with key.lock:
        return key.etag


def same_etag(a: str, b: str) -> bool:
    """ETags compare equal with or without their surrounding quotes (as S3 does)."""
    return a.strip().strip('"') == b.strip().strip('"')


@dataclass
class Snapshot:
    """A consistent view of one object for reading: which bytes, and how to get them."""

    etag: str
    size: int
    start: int
    length: int
    fd: int | None  # duplicated fd of a disk-backed value, owned by the reader
    data: bytes | None  # the requested slice, for small in-memory values


def snapshot(key: FakeKey, choose: Callable[[str, int], tuple[int, int]]) -> Snapshot:
    """Capture a slice of a key without copying the whole value.

    ``choose(etag, size)`` runs under the key's lock and returns (start, length); it may
    raise S3Error (failed precondition, bad range). Disk-backed values are read later with
    os.pread on a duplicated descriptor, so a concurrent overwrite, delete or rename (which
    closes the old buffer) cannot cut a response short. Raises ValueError if the key was
    disposed before we got to it (the caller looks the key up again).
    """
    buf = key._value_buffer
    with key.lock:
        etag = key.etag
        size = key.size
        start, length = choose(etag, size)
        if getattr(buf, "_rolled", False):
            return Snapshot(etag, size, start, length, os.dup(buf.fileno()), None)
        buf.seek(start)
        return Snapshot(etag, size, start, length, None, buf.read(length))
