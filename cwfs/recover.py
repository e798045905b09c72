"""``cwfs recover``: list the data that mounts kept because they could not upload it, and
upload it when asked, never over newer data.

Kept data is found by its records (`cwfs.kept`) in the private cache directories of
mounts that are gone and in a ``--cache-dir`` given. ``--upload`` sends each file as
its mount would have: with ``If-None-Match: *`` when it was to create its key, with
``If-Match`` its base ETag when it was to replace a version. A key that changed since is
a conflict: reported, and the file stays. Uploaded files are removed, and the multipart
uploads those mounts left open are aborted.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import trio

from cwfs.config import ConfigError, add_options, option_values, store_settings
from cwfs.errors import PreconditionFailed, StoreError
from cwfs.kept import (
    KeptFile,
    abort_stale,
    cache_directories,
    file_crc32c,
    find_kept,
    find_stale_uploads,
    forget,
)
from cwfs.store import ObjectStore, WriteCondition
from cwfs.upload import Uploader

log = logging.getLogger(__name__)

STORE_OPTIONS = ("endpoint", "profile", "region", "addressing_style")
UPLOAD_OPTIONS = ("part_size", "checksum")


def add_recover_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bucket", nargs="?", help="only this bucket's kept data")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="also look in this directory (one given to mounts with --cache-dir); the private "
        "cache directories of mounts are always looked in",
    )
    parser.add_argument(
        "--upload",
        action="store_true",
        help="upload each kept file unless its key changed since (then it stays), and abort "
        "the multipart uploads left open",
    )
    add_options(parser, STORE_OPTIONS + UPLOAD_OPTIONS)  # the endpoint defaults to the record's


def describe(kept: KeptFile) -> str:
    """One line of the listing."""
    record = kept.record
    if record is None:
        return f"?  {kept.size} bytes  (no record: kept by an older cwfs)  {kept.path}"
    base = record.base_etag or "new"
    reason = record.reason or "its mount stopped before uploading it"
    return f"{record.bucket}/{record.key}  {kept.size} bytes  base {base}  {reason}  {kept.path}"


class Recovery:
    """Uploads kept files, one store and uploader per bucket and endpoint."""

    def __init__(self, args: argparse.Namespace) -> None:
        self._args = args
        self._options = option_values(args, UPLOAD_OPTIONS)
        self._stores: dict[tuple[str, str], tuple[ObjectStore, Uploader]] = {}

    def _store(self, bucket: str, endpoint: str) -> tuple[ObjectStore, Uploader]:
        if (bucket, endpoint) not in self._stores:
            given = {name: getattr(self._args, name) for name in STORE_OPTIONS}
            given["endpoint"] = given["endpoint"] or endpoint
            store = ObjectStore(store_settings(bucket, argparse.Namespace(**given)))
            uploader = Uploader(store, self._options["part_size"], 1, self._options["checksum"], 5)
            self._stores[(bucket, endpoint)] = (store, uploader)
        return self._stores[(bucket, endpoint)]

    async def upload(self, kept: KeptFile) -> str | None:
        """Upload one kept file; None when done, else why it stays."""
        record = kept.record
        if record is None:
            return "its key is unknown (no record): upload it by hand"
        if record.crc32c and file_crc32c(kept.path)[1] != record.crc32c:
            return "its content changed since it was kept (CRC32C differs)"
        _, uploader = self._store(record.bucket, record.endpoint)
        fd = os.open(kept.path, os.O_RDONLY)
        try:
            condition = WriteCondition(record.base_etag)
            await uploader.upload(record.key, fd, kept.size, condition, record.metadata)
        except PreconditionFailed:
            base = record.base_etag or "nothing"
            return f"conflict: the key no longer holds {base} (someone wrote it since)"
        except StoreError as exc:
            return f"{exc.code}: {exc.message}"
        finally:
            os.close(fd)
        forget(kept)
        return None

    async def abort_left_open(self, directories: list[Path], bucket: str | None) -> int:
        """Abort the multipart uploads mounts that are gone left open; how many."""
        aborted = 0
        for stale in find_stale_uploads(directories, bucket):
            store, _ = self._store(stale.bucket, stale.endpoint)
            aborted += await abort_stale(store, stale)
        return aborted


async def _upload_all(args: argparse.Namespace, kept: list[KeptFile], dirs: list[Path]) -> int:
    recovery = Recovery(args)
    left = 0
    for item in kept:
        why = await recovery.upload(item)
        if why is None:
            print(f"uploaded {item.record.bucket if item.record else ''}/{item.key}")
        else:
            left += 1
            print(f"not uploaded {item.key}: {why}; it stays in {item.path}")
    aborted = await recovery.abort_left_open(dirs, args.bucket)
    print(f"{len(kept) - left} uploaded, {left} still kept, {aborted} open uploads aborted")
    return 1 if left else 0


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="cwfs recover: %(message)s")
    directories = cache_directories(args.bucket, args.cache_dir)
    kept = find_kept(directories, args.bucket)
    for item in kept:
        print(describe(item))
    if not args.upload:
        total = sum(item.size for item in kept)
        print(f"{len(kept)} files kept ({total} bytes)" if kept else "nothing is kept")
        return 0
    try:
        return trio.run(_upload_all, args, kept, directories)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
