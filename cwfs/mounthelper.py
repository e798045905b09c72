"""``mount -t fuse.cwfs BUCKET DIR -o OPTIONS`` and fstab lines: mount(8)'s helper form.

mount(8) hands a ``fuse.cwfs`` mount to ``mount.fuse3``, which runs ``cwfs BUCKET DIR
-o OPTIONS`` with mount's PATH (``/usr/local/bin`` is on it, a virtualenv is not), once
it has taken out what only mount reads (``_netdev``, ``nofail``, ``noauto``...) and, for
root, added ``dev,suid``. This turns that command line into ``cwfs mount`` arguments:
every ``cwfs mount`` option is an ``-o`` key (``endpoint=URL``, ``read_only``; dashes or
underscores), ``ro`` is ``--read-only``, the mount flags FUSE understands (``noatime``,
``nodev``...) go to ``--fuse-options``, options only mount(8) reads are ignored, and
anything else is an error naming it. With ``all_buckets`` the source is any word
(``cwfs``): it names no bucket. The mount then starts in the background, as
``cwfs mount`` does, and the command returns once it answers.
"""

from __future__ import annotations

from collections.abc import Sequence

from cwfs.config import FUSE_FLAGS, FUSE_VALUED, mount_option

# What mount(8) and mount.fuse3 read themselves, should they pass it on.
MOUNT_ONLY = frozenset(
    "defaults auto noauto user users nouser owner group _netdev nofail drop_privileges rw".split()
)
MOUNT_ONLY_PREFIXES = ("x-", "comment=", "setuid=", "helper=")


class MountOptionError(ValueError):
    """A mount option cwfs does not know, or one used the wrong way."""


def is_helper_form(argv: Sequence[str], commands: Sequence[str]) -> bool:
    """Whether ``argv`` is ``SOURCE DIR [-o OPTIONS]`` rather than a cwfs command."""
    return len(argv) >= 2 and argv[0] not in commands and not argv[0].startswith("-")


def mount_arguments(argv: Sequence[str]) -> list[str]:
    """``cwfs mount`` arguments for mount(8)'s ``SOURCE DIR [-o OPTIONS]...``."""
    bucket, mountpoint, *rest = argv
    arguments = ["mount", bucket, mountpoint]
    fuse: list[str] = []
    while rest:
        flag, *rest = rest
        if flag in ("-n", "-s", "-v"):  # no mtab, sloppy, verbose: nothing to do here
            continue
        if flag != "-o" or not rest:
            raise MountOptionError(f"unexpected argument {flag!r} (expected -o OPTIONS)")
        text, *rest = rest
        for item in filter(None, (part.strip() for part in text.split(","))):
            arguments += _translate(item, fuse)
    if fuse:
        arguments += ["--fuse-options", ",".join(fuse)]
    if "--all-buckets" in arguments:
        del arguments[1]  # the source names no bucket: fstab needs a word there, any
    return arguments


def _translate(item: str, fuse: list[str]) -> list[str]:
    """The flags for one ``-o`` item; FUSE's own options are added to ``fuse``."""
    key, equals, value = item.partition("=")
    spec = mount_option(key.replace("-", "_"))
    if spec is not None and spec.name != "fuse_options":
        if spec.is_switch:
            if equals:
                raise MountOptionError(f"mount option {key!r} takes no value")
            return [spec.flags[0]]
        if not equals:
            raise MountOptionError(f"mount option {key!r} needs a value ({key}={spec.value_name})")
        return [spec.flags[0], value]
    if item == "ro":
        return ["--read-only"]
    if item in MOUNT_ONLY or item.startswith(MOUNT_ONLY_PREFIXES):
        return []
    if key in (FUSE_VALUED if equals else FUSE_FLAGS):
        fuse.append(item)
        return []
    raise MountOptionError(
        f"unknown mount option {item!r}: not a cwfs option (see `cwfs mount --help`) nor "
        "a FUSE mount option cwfs passes on"
    )
