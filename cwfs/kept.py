"""Kept data: what a mount could not upload, recorded so that it can be found and recovered.

Every file staged for upload has a record beside it, ``<name>.cwfs-record`` (JSON): the
bucket, endpoint and key, the ETag its upload is conditional on (None: the key did not
exist, so ``If-None-Match: *``), and the mount that stages it. The record is written when
staging starts and again when the key or that ETag changes (a rename, an fsync's
upload), so data a killed mount left (SIGKILL, a crash) can be recovered as well as data
a mount kept knowingly. A kept file's record also has the reason, the size, a CRC32C of
the content, the object metadata and the time. Discarding data removes its record.

A running mount holds an exclusive lock (flock) on ``.mount-<pid>-<random>.lock`` in its
cache directory, released when it exits however it exits. Data whose mount's lock is
free is kept data, whatever its record says. Multipart uploads are recorded likewise
(``.upload-<hash>.cwfs-upload``) from their creation to their completion or abort, so the
parts of a killed mount's upload are aborted by the next mount or by ``cwfs recover``.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from awscrt import checksums

from cwfs.errors import StoreError
from cwfs.store import ObjectStore

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".cwfs-record"
UPLOAD_SUFFIX = ".cwfs-upload"
YOUNG = 60.0  # seconds: data this new without a record may be one whose record comes next


def default_cache_base() -> Path:
    """Where private cache directories (and the attribute file) are: ``~/.cache/cwfs``."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cwfs"


@dataclass(frozen=True)
class Record:
    """What is known of one staged file (see the module's rules)."""

    bucket: str
    endpoint: str
    key: str
    base_etag: str | None
    mount: str
    metadata: dict[str, str] = field(default_factory=dict)
    reason: str = ""
    size: int | None = None
    crc32c: str | None = None
    kept_at: str = ""

    def write(self, data: Path) -> None:
        """Write (or replace) the record of the data file ``data``, atomically."""
        _write_json(record_path(data), asdict(self))

    @classmethod
    def read(cls, data: Path) -> Record | None:
        """The record of ``data``; None when it has none or it cannot be read."""
        try:
            return cls(**json.loads(record_path(data).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def kept(self, data: Path, reason: str) -> Record:
        """This record completed for data kept for ``reason``."""
        size, crc = file_crc32c(data)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        return replace(self, reason=reason, size=size, crc32c=crc, kept_at=stamp)


def record_path(data: Path) -> Path:
    return data.with_name(data.name + RECORD_SUFFIX)


def file_crc32c(path: Path) -> tuple[int, str]:
    """The size of the file at ``path`` and its CRC32C, base64 as S3 writes it."""
    crc = size = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            crc = checksums.crc32c(chunk, crc)
            size += len(chunk)
    return size, base64.b64encode(crc.to_bytes(4, "big")).decode()


def _write_json(path: Path, value: object) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(value, sort_keys=True))
    os.replace(partial, path)


class MountLock:
    """The lock a running mount holds in its cache directory (see the module's rules)."""

    def __init__(self, directory: Path) -> None:
        self.name = f".mount-{os.getpid()}-{secrets.token_hex(4)}.lock"
        self.path = directory / self.name
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        os.close(self._fd)


def mount_alive(directory: Path, lock_name: str) -> bool:
    """Whether the mount that holds ``lock_name`` in ``directory`` still runs."""
    try:
        fd = os.open(directory / lock_name, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


class UploadLedger:
    """The open multipart uploads of one mount, one small file each in its cache directory."""

    def __init__(self, directory: Path, bucket: str, endpoint: str, mount: str) -> None:
        self._directory = directory
        self._entry = {"bucket": bucket, "endpoint": endpoint, "mount": mount}

    def _path(self, upload_id: str) -> Path:
        digest = hashlib.sha256(upload_id.encode()).hexdigest()[:24]
        return self._directory / f".upload-{digest}{UPLOAD_SUFFIX}"

    def opened(self, key: str, upload_id: str) -> None:
        _write_json(self._path(upload_id), {**self._entry, "key": key, "upload_id": upload_id})

    def closed(self, upload_id: str) -> None:
        self._path(upload_id).unlink(missing_ok=True)


@dataclass(frozen=True)
class KeptFile:
    """Data no running mount will upload: its path, size and record (None for data kept
    by a cwfs that wrote no records)."""

    path: Path
    size: int
    record: Record | None

    @property
    def key(self) -> str:
        return self.record.key if self.record else "?"


@dataclass(frozen=True)
class StaleUpload:
    """A multipart upload left open by a mount that is gone."""

    path: Path
    bucket: str
    endpoint: str
    key: str
    upload_id: str


def cache_directories(bucket: str | None, configured: Path | None = None) -> list[Path]:
    """Where kept data of ``bucket`` (None: any) can be: ``configured``, and the private
    cache directories of mounts (``<bucket>-<8 characters>`` under the cache base)."""
    pattern = re.compile(rf"{re.escape(bucket) if bucket else '.+'}-[a-z0-9_]{{8}}")
    base = default_cache_base()
    found = [configured] if configured is not None else []
    if base.is_dir():
        found += sorted(p for p in base.iterdir() if p.is_dir() and pattern.fullmatch(p.name))
    return [p for p in dict.fromkeys(found) if p.is_dir()]


def _is_data(path: Path) -> bool:
    return (
        not path.name.startswith(".")
        and not path.name.endswith((RECORD_SUFFIX, UPLOAD_SUFFIX))
        and path.is_file()
    )


def find_kept(directories: Iterable[Path], bucket: str | None = None) -> list[KeptFile]:
    """The kept data in ``directories`` (of ``bucket``, if given), oldest first."""
    kept = []
    now = time.time()
    for directory in directories:
        for path in sorted(filter(_is_data, directory.iterdir())):
            record = Record.read(path)
            stat = path.stat()
            if record is None and now - stat.st_mtime < YOUNG:
                continue  # perhaps staged a moment ago, its record about to be written
            if record is not None and (
                (bucket is not None and record.bucket != bucket)
                or mount_alive(directory, record.mount)
            ):
                continue
            kept.append(KeptFile(path, stat.st_size, record))
    return kept


def find_stale_uploads(directories: Iterable[Path], bucket: str | None) -> Iterator[StaleUpload]:
    """Multipart uploads recorded in ``directories`` by mounts that are gone."""
    for directory in directories:
        for path in sorted(directory.glob(f".upload-*{UPLOAD_SUFFIX}")):
            try:
                entry = json.loads(path.read_text())
                stale = StaleUpload(
                    path,
                    entry["bucket"],
                    entry["endpoint"],
                    entry["key"],
                    entry["upload_id"],
                )
            except (OSError, ValueError, KeyError):
                continue
            if (bucket is None or stale.bucket == bucket) and not mount_alive(
                directory, entry["mount"]
            ):
                yield stale


async def abort_stale(store: ObjectStore, stale: StaleUpload) -> bool:
    """Abort an upload a mount that is gone left open, and forget it; whether it is gone."""
    try:
        await store.abort_multipart_upload(stale.key, stale.upload_id)
    except StoreError as exc:
        log.warning("could not abort the upload %r's mount left open: %s", stale.key, exc)
        return False
    log.info("aborted the multipart upload of %r that a mount which is gone left", stale.key)
    stale.path.unlink(missing_ok=True)
    return True


def forget(kept: KeptFile) -> None:
    """Remove recovered data, its record, and its directory if it was a mount's private
    one and nothing else is left in it."""
    kept.path.unlink(missing_ok=True)
    record_path(kept.path).unlink(missing_ok=True)
    remove_stale_locks(kept.path.parent)


def remove_stale_locks(directory: Path) -> None:
    """Remove the locks of mounts that are gone; then a private cache directory left
    empty goes too."""
    for lock in directory.glob(".mount-*.lock"):
        if not mount_alive(directory, lock.name):
            lock.unlink(missing_ok=True)
    if directory.parent == default_cache_base():
        try:
            directory.rmdir()
        except OSError:
            pass  # it still holds something


def summary(kept: list[KeptFile], shown: int = 3) -> str:
    """``N files (B bytes): 'k1', 'k2', 'k3' and M more``."""
    names = ", ".join(repr(k.key) if k.record else str(k.path) for k in kept[:shown])
    more = f" and {len(kept) - shown} more" if len(kept) > shown else ""
    return f"{len(kept)} files ({sum(k.size for k in kept)} bytes): {names}{more}"
