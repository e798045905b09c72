"""Which cwfs mounts run on this machine, and what they serve, for ``cwfs warm PATH``.

A mount writes a record (bucket, prefix, endpoints, credentials profile) once it is
ready and removes it at unmount. A record counts only while the kernel's mount table
shows a cwfs mount at its mount point, so one left behind by a killed process is
ignored. Records replace extended attributes on the mount: a filesystem that serves
any getxattr is asked by the kernel for ``security.selinux`` and
``system.posix_acl_access`` on every ``ls -l`` of every file, two round trips that
took nine tenths of a cached ``ls -l``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

from cwfs.config import Config, state_dir

log = logging.getLogger(__name__)

FSTYPE = "fuse.cwfs"  # as the mount table shows the mount's subtype


@dataclass(frozen=True)
class MountRecord:
    mountpoint: str
    bucket: str
    prefix: str
    settings: dict[str, str] = field(
        default_factory=dict
    )  # endpoint, lota_endpoint, ... as config names them


def _record_path(mountpoint: str) -> Path:
    return state_dir() / "mounts" / f"{quote(mountpoint, safe='')}.json"


def write_record(config: Config) -> Path | None:
    """Record what the mount at ``config.mountpoint`` serves; None if it cannot be written."""
    settings = {
        "endpoint": config.endpoint,
        "lota_endpoint": config.lota_endpoint,
        "addressing_style": config.addressing_style,
    }
    settings.update(
        {
            name: value
            for name, value in (("region", config.region), ("profile", config.profile))
            if value
        }
    )
    record = MountRecord(str(config.mountpoint), config.bucket, config.prefix, settings)
    path = _record_path(record.mountpoint)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale(path.parent)
        path.write_text(json.dumps(asdict(record)))
    except OSError as exc:
        log.warning("cannot record the mount in %s (cwfs warm will not find it): %s", path, exc)
        return None
    return path


def _remove_stale(directory: Path) -> None:
    """Remove the records of mounts that are gone (their process was killed)."""
    live = {_record_path(point) for point in current_cwfs_mountpoints()}
    for path in directory.glob("*.json"):
        if path not in live:
            path.unlink(missing_ok=True)


def current_cwfs_mountpoints() -> list[str]:
    with open("/proc/self/mountinfo", "rb") as table:
        return cwfs_mountpoints(table.read())


def cwfs_mountpoints(mountinfo: bytes) -> list[str]:
    """Mount points of cwfs mounts in a mount table (/proc/self/mountinfo's format).

    The kernel writes a path's bytes as they are, except space, tab, newline and
    backslash, which it escapes as three octal digits.
    """
    points = []
    for line in mountinfo.splitlines():
        fields, _, rest = line.partition(b" - ")
        if rest.split(b" ", 1)[0] == FSTYPE.encode():
            escaped = fields.split(b" ")[4]
            points.append(
                os.fsdecode(re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), escaped))
            )
    return points


def find(path: Path) -> tuple[MountRecord, str] | None:
    """The record of the cwfs mount ``path`` lies on, and the key (or prefix) it names."""
    real = os.path.realpath(path)
    mountpoints = [
        p for p in current_cwfs_mountpoints() if real == p or real.startswith(p.rstrip("/") + "/")
    ]
    if not mountpoints:
        return None
    mountpoint = max(mountpoints, key=len)
    try:
        record = MountRecord(**json.loads(_record_path(mountpoint).read_text()))
    except (OSError, ValueError, TypeError):
        return None
    relative = real[len(mountpoint) :].strip("/")
    if not record.bucket:  # --all-buckets: the first component is the bucket
        bucket, _, relative = relative.partition("/")
        if not bucket:
            return None
        record = replace(record, bucket=bucket)
    key = record.prefix + relative
    if relative and os.path.isdir(real):
        key += "/"
    return record, key
