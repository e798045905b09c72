"""What a name is: the attributes of a file or directory, and how objects carry them.

Objects keep what legacy tools set as user metadata (x-amz-meta-*): mtime as
"seconds.nanoseconds" (rclone's format, exact to the nanosecond) and mode as the
decimal st_mode (s3fs's format). Listings carry no user metadata.

A symbolic link is an object named ``<name>.rclonelink`` whose body is the target
(rclone's convention, so ``rclone mount --links`` and cwfs read each other's links, and
a listing shows a link without a request per entry). A link written by s3fs (the body
is the target, ``x-amz-meta-mode`` says S_IFLNK) shows as a link once looked up.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass

log = logging.getLogger(__name__)

MTIME_KEY = "mtime"
MODE_KEY = "mode"
UID_KEY = "uid"  # s3fs's names for the owner
GID_KEY = "gid"
RDEV_KEY = "rdev"
SPECIAL_TYPES = (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)
LINK_SUFFIX = ".rclonelink"


@dataclass(frozen=True, slots=True)  # one per cached name: 112 bytes less each
class Attrs:
    """The attributes of one name: a directory, or a file with size, mtime, ETag, mode.

    ``mode`` holds permission bits when the object carries them, else None (the
    mount's --file-mode applies). ``mtime_ns`` is 0 for directories without one.
    ``exact`` is False for a file seen only in a listing: its user metadata (the mtime
    and mode tools stored) is unknown, so mtime is its Last-Modified time. ``link`` is
    set for a symbolic link: what its object's key has after the name (`LINK_SUFFIX`,
    or "" for an s3fs link); its size is the target's length. ``uid`` and ``gid`` are
    the owner stored with the object, or None (the mount's --uid/--gid apply).
    ``special`` is the file type of a FIFO, socket or device node (its object is empty,
    its type in ``x-amz-meta-mode``, as s3fs stores them), 0 for a regular file.
    """

    is_dir: bool
    size: int = 0
    mtime_ns: int = 0
    etag: str | None = None
    mode: int | None = None
    exact: bool = True
    link: str | None = None
    uid: int | None = None
    gid: int | None = None
    special: int = 0
    rdev: int = 0
    ctime_ns: int = 0  # 0: the same as mtime

    @property
    def is_link(self) -> bool:
        return self.link is not None


DIRECTORY = Attrs(is_dir=True)


def format_mtime(mtime_ns: int) -> str:
    return f"{mtime_ns // 1_000_000_000}.{mtime_ns % 1_000_000_000:09d}"


def parse_mtime(text: str) -> int:
    """Inverse of `format_mtime`; also accepts integer or float seconds from other tools."""
    seconds, _, fraction = text.strip().partition(".")
    return int(seconds) * 1_000_000_000 + int((fraction + "000000000")[:9] or 0)


def file_attrs(
    size: int, last_modified_ns: int, etag: str | None, metadata: dict[str, str] | None
) -> Attrs:
    """A file's attributes, preferring the mtime and mode tools stored in its metadata
    (None: not known, as in a listing)."""
    if metadata is None:
        return Attrs(is_dir=False, size=size, mtime_ns=last_modified_ns, etag=etag, exact=False)
    mtime_ns, mode, link = last_modified_ns, None, None
    uid = gid = None
    special = rdev = 0
    try:
        if RDEV_KEY in metadata:
            rdev = int(metadata[RDEV_KEY])
        if UID_KEY in metadata:
            uid = int(metadata[UID_KEY])
        if GID_KEY in metadata:
            gid = int(metadata[GID_KEY])
        if MTIME_KEY in metadata:
            mtime_ns = parse_mtime(metadata[MTIME_KEY])
        if MODE_KEY in metadata:
            st_mode = int(metadata[MODE_KEY])
            mode = st_mode & 0o7777
            link = "" if stat.S_ISLNK(st_mode) else None
            special = stat.S_IFMT(st_mode) if stat.S_IFMT(st_mode) in SPECIAL_TYPES else 0
    except ValueError:
        log.warning("ignoring unparsable metadata %r", metadata)
    return Attrs(
        False, size, mtime_ns, etag, mode, link=link, uid=uid, gid=gid, special=special, rdev=rdev
    )


def link_name(name: str) -> str | None:
    """The link's name if ``name`` (an object's last key component) stores a link."""
    if name.endswith(LINK_SUFFIX) and len(name) > len(LINK_SUFFIX):
        return name[: -len(LINK_SUFFIX)]
    return None


def object_metadata(
    mtime_ns: int,
    mode: int | None,
    file_type: int,
    uid: int | None = None,
    gid: int | None = None,
) -> dict[str, str]:
    """The user metadata to store for ``mtime_ns``, ``mode`` and the owner (None: not stored)."""
    metadata = {MTIME_KEY: format_mtime(mtime_ns)}
    if mode is not None:
        metadata[MODE_KEY] = str(file_type | mode)
    if uid is not None:
        metadata[UID_KEY] = str(uid)
    if gid is not None:
        metadata[GID_KEY] = str(gid)
    return metadata
