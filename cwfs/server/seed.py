"""Bulk set-up straight into the backend, and the deterministic test-data pattern.

Seeding through HTTP would make test set-up slow and pollute request counts; tests
instead seed here and compare what they read against :func:`pattern`.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # moto is only needed server-side; tests import pattern() cheaply
    from moto.s3.models import S3Backend

#: Not a power of two, so reading at a wrong block-aligned offset never looks right.
_PERIOD = (1 << 20) + 13


def pattern(key: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes of length ``size`` for ``key`` (fast for GiBs).

    A 1 MiB+13 block seeded by (key, size) repeated; the same on every Python >= 3.9.
    """
    if size <= 0:
        return b""
    block = random.Random(f"cwfs:{key}:{size}").randbytes(min(size, _PERIOD))
    full, rest = divmod(size, len(block))
    return b"".join([block] * full + [block[:rest]])  # one allocation, no per-byte work


def object_body(spec: dict[str, Any]) -> bytes:
    """The bytes of one seed entry: ``body_b64``, ``text`` or ``size`` (pattern)."""
    if "body_b64" in spec:
        return base64.b64decode(spec["body_b64"])
    if "text" in spec:
        return str(spec["text"]).encode()
    return pattern(spec["key"], int(spec.get("size", 0)))


def seed_objects(
    backend: S3Backend, bucket: str, objects: Iterable[dict[str, Any]], create_bucket: bool = True
) -> list[dict[str, Any]]:
    """Create objects directly in the backend; returns key, size and ETag of each.

    Each entry: ``key`` plus one of ``size``/``body_b64``/``text``; optional
    ``content_type`` and ``metadata`` (dict of x-amz-meta-* names without the prefix).
    Call with the mutation lock held.
    """
    from .backend import ensure_bucket, etag_of

    if create_bucket:
        ensure_bucket(backend, bucket)
    created = []
    for spec in objects:
        body = object_body(spec)
        key = backend.put_object(bucket, spec["key"], body, disable_notification=True)
        metadata = {f"x-amz-meta-{k}": str(v) for k, v in (spec.get("metadata") or {}).items()}
        if spec.get("content_type"):
            metadata["Content-Type"] = spec["content_type"]
        if metadata:
            key.set_metadata(metadata)
        created.append({"key": spec["key"], "size": len(body), "etag": etag_of(key)})
    return created


DEMO_BUCKET = "demo"


def demo_objects() -> list[dict[str, Any]]:
    """A small tree for the demo: text files, a nested folder, a marker dir, a 5 MiB file."""
    text = "text/plain; charset=utf-8"
    return [
        {
            "key": "README.txt",
            "content_type": text,
            "text": "Welcome to cwfs: this bucket is served by the embedded S3 server.\n",
        },
        {"key": "hello.txt", "content_type": text, "text": "hello, world\n"},
        {
            "key": "docs/guide.md",
            "content_type": "text/markdown",
            "text": "# Guide\n\nFiles are objects; folders are key prefixes.\n",
        },
        {
            "key": "docs/notes/todo.txt",
            "content_type": text,
            "text": "- mount the bucket\n- read a file\n- rename a file\n",
        },
        {
            "key": "docs/notes/ideas.txt",
            "content_type": text,
            "text": "ranged reads\n",
            "metadata": {"author": "cwfs"},
        },
        {"key": "empty/", "size": 0, "content_type": "application/x-directory"},
        {
            "key": "data/sample.bin",
            "size": 5 * (1 << 20) + 123,
            "content_type": "application/octet-stream",
        },
        {"key": "data/small.csv", "content_type": "text/csv", "text": "id,name\n1,alpha\n2,beta\n"},
    ]
