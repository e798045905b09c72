"""One immutable configuration, built once from CLI flags, environment and profile files.

Every mount option is defined once, as a field of `Config` with its `Option` (help,
parser, metavar): the ``--flag``, the ``CWFS_<OPTION>`` environment variable and the
table in docs/configuration.md all come from that definition, and a flag's text and a
variable's text go through the same parser. Precedence for every option: command-line
flag, then the environment, then the profile's config file (endpoint, region,
addressing style), then the default.
"""

from __future__ import annotations

import argparse
import configparser
import errno
import math
import os
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

PRIMARY_ENDPOINT = "https://cwobject.com"
LOTA_ENDPOINT = "http://cwlota.com"
COREWEAVE_DOMAINS = ("cwobject.com", "cwlota.com")
COREWEAVE_PROFILE = "cw"
MIN_PART_SIZE = 5 << 20
MAX_PART_SIZE = 5 << 30
_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def state_dir() -> Path:
    """Where cwfs keeps logs and records of running mounts (XDG_STATE_HOME/cwfs)."""
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "cwfs"


def default_max_memory() -> int:
    """An eighth of the machine's memory, between 256 MiB and 4 GiB."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(max(total // 8, 256 << 20), 4 << 30)


class ConfigError(ValueError):
    """The options cannot describe a working mount; the message says why."""


# Parsers: text (a flag's or a variable's) to a value; ValueError says what is wrong.


def parse_bool(text: str) -> bool:
    """A switch given as text (environment): 1/true/yes/on or 0/false/no/off, any case."""
    word = text.strip().lower()
    if word in _TRUE + _FALSE:
        return word in _TRUE
    raise ValueError(f"not a boolean: use one of {'/'.join(_TRUE)} or {'/'.join(_FALSE)}")


def parse_ttl(text: str) -> float:
    """Seconds, or ``indefinite`` for data that never changes behind the mount's back."""
    if text.strip().lower() in ("indefinite", "inf", "forever"):
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number of seconds or 'indefinite'") from None


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``50M``, ``16G``, ``1T`` (binary units) as a byte count."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    last = value[-1:]
    number, suffix = (value[:-1], last) if last and last in _SIZE_SUFFIXES else (value, "")
    try:
        return int(float(number) * _SIZE_SUFFIXES[suffix])
    except ValueError:
        raise ValueError("not a size") from None


def format_size(size: int) -> str:
    """A byte count in the largest binary unit that divides it, as `parse_size` reads it."""
    for suffix, unit in reversed(_SIZE_SUFFIXES.items()):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    raise AssertionError("every size is a whole number of bytes")


def parse_int(text: str) -> int:
    """A whole number in decimal."""
    try:
        return int(text)
    except ValueError:
        raise ValueError("not a whole number") from None


def parse_float(text: str) -> float:
    """A number of seconds."""
    try:
        return float(text)
    except ValueError:
        raise ValueError("not a number") from None


def parse_octal(text: str) -> int:
    """Permission bits in octal, as chmod takes them (``644``, ``0644``, ``0o644``)."""
    try:
        return int(text, 8)
    except ValueError:
        raise ValueError("not an octal number") from None


def parse_url(text: str) -> str:
    """An http(s) URL with a host: what botocore can send requests to."""
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ValueError("must be an http(s) URL")
    return text


# Mount options the kernel's FUSE mount understands, passed on by --fuse-options: the
# generic mount flags, the permission check, and SELinux contexts (with a value).
FUSE_FLAGS = frozenset(
    "rw ro suid nosuid dev nodev exec noexec sync async dirsync atime noatime diratime "
    "nodiratime relatime norelatime strictatime nostrictatime lazytime nolazytime "
    "default_permissions".split()
)
FUSE_VALUED = frozenset({"max_read", "context", "fscontext", "defcontext", "rootcontext"})


def parse_fuse_options(text: str) -> tuple[str, ...]:
    """Comma-separated FUSE mount options, each one cwfs knows the kernel takes."""
    options = tuple(item.strip() for item in text.split(",") if item.strip())
    for item in options:
        name, equals, _ = item.partition("=")
        if name not in (FUSE_VALUED if equals else FUSE_FLAGS):
            raise ValueError(f"{item!r} is not a FUSE mount option cwfs passes on")
    return options


def parse_listen(text: str) -> tuple[str, int]:
    """``PORT`` (every interface, as Prometheus exporters listen) or ``ADDRESS:PORT``."""
    address, _, port = text.rpartition(":")
    number = parse_int(port)
    if not 0 < number < 65536:
        raise ValueError(f"{port!r} is not a port number")
    return address.strip("[]") or "0.0.0.0", number


def bounded(
    parse: Callable[[str], Any],
    low: float,
    high: float = math.inf,
    show: Callable[[Any], str] = str,
) -> Callable[[str], Any]:
    """``parse``, refusing values outside ``low..high`` (as ``show`` writes them)."""

    def parse_bounded(text: str) -> Any:
        value = parse(text)
        if not low <= value <= high:
            if high < math.inf:
                raise ValueError(f"must be between {show(low)} and {show(high)}")
            raise ValueError(f"must be at least {show(low)}" if low else "must not be negative")
        return value

    return parse_bounded


@dataclass(frozen=True)
class Choice:
    """One of a few words, in any case; returns the word as ``values`` spells it."""

    values: tuple[str, ...]

    def __call__(self, text: str) -> str:
        for value in self.values:
            if text.strip().lower() == value.lower():
                return value
        raise ValueError(f"must be one of {', '.join(self.values)}")


def _show(value: object) -> str:
    """A default as the docs and ``--help`` show it."""
    if value is None or value == "":
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


@dataclass(frozen=True)
class Option:
    """One ``cwfs mount`` option: its flag, its ``CWFS_`` variable and its row in the docs.

    ``name`` and ``default`` are those of the `Config` field the option is declared on.
    ``help`` is the docs' text too (markdown). A `parse_bool` option is a switch flag.
    """

    help: str
    parse: Callable[[str], Any] = str
    metavar: str = ""
    show: Callable[[Any], str] = _show
    default_text: str = ""  # when the default is no constant, e.g. "the mounting user"
    aliases: tuple[str, ...] = ()
    name: str = ""
    default: Any = None

    @property
    def flags(self) -> tuple[str, ...]:
        return ("--" + self.name.replace("_", "-"), *self.aliases)

    @property
    def env(self) -> str:
        return "CWFS_" + self.name.upper()

    @property
    def is_switch(self) -> bool:
        return self.parse is parse_bool

    @property
    def value_name(self) -> str:
        """What the flag takes, e.g. ``SIZE`` or ``auto|on|off``; empty for a switch."""
        if self.metavar or self.is_switch:
            return self.metavar
        return "|".join(self.parse.values) if isinstance(self.parse, Choice) else "VALUE"

    @property
    def default_doc(self) -> str:
        return self.default_text or self.show(self.default)

    def convert(self, text: str, source: str) -> Any:
        """The value of ``text`` given as ``source`` (a flag, a variable, a file)."""
        try:
            return self.parse(text)
        except ValueError as exc:
            raise ConfigError(f"{source}={text!r}: {exc}") from None


def option(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = str,
    factory: Callable[[], Any] | None = None,
    **details: Any,
) -> Any:
    """Declare a `Config` field as a mount option; ``factory()``, if given, is its default."""
    metadata = {"option": Option(help, parse, **details)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def _show_octal(mode: int) -> str:
    return f"`0{mode:o}`"


def _show_size(size: int) -> str:
    return f"`{format_size(size)}`"


def _size(
    default: int | None, help: str, low: int = 1 << 20, high: float = math.inf, **details: Any
) -> Any:
    parse = bounded(parse_size, low, high, format_size)
    return option(default, help, parse, metavar="SIZE", show=_show_size, **details)


def _count(default: int, help: str, low: int = 1) -> Any:
    return option(default, help, bounded(parse_int, low), metavar="N")


def _seconds(default: float, help: str, parse: Callable[[str], float] = parse_float) -> Any:
    return option(default, help, bounded(parse, 0), metavar="SECONDS")


def _switch(help: str, **details: Any) -> Any:
    return option(False, help, parse_bool, **details)


@dataclass(frozen=True)
class Config:
    """Everything one mount needs, validated; its option fields are the mount options."""

    bucket: str
    mountpoint: Path
    endpoint: str = option(
        PRIMARY_ENDPOINT,
        "S3 endpoint. CoreWeave's primary endpoint requires TLS 1.3: checked at mount with a "
        "handshake to `<bucket>.cwobject.com` that refuses anything older.",
        parse_url,
        metavar="URL",
    )
    region: str | None = option(
        None,
        "signing region; CoreWeave uses the availability zone name, e.g. `US-EAST-04A`.",
        metavar="AZ",
        default_text="from the profile, else `us-east-1`",
    )
    profile: str | None = option(
        None,
        "credentials/config profile, looked up in the CoreWeave files first, then `~/.aws/`.",
        metavar="NAME",
        default_text="`cw` when `~/.coreweave/cw.credentials` exists",
    )
    addressing_style: str = option(
        "virtual",
        "CoreWeave endpoints (`*.cwobject.com`, `*.cwlota.com`) accept virtual-hosted "
        "addressing only; `path` is refused for them and meant for local test servers.",
        Choice(("virtual", "path")),
    )
    prefix: str = option("", "mount only the keys below `P/`.", metavar="P/")
    all_buckets: bool = _switch(
        "mount every bucket the credentials list (ListBuckets), one directory each, instead "
        "of one bucket: `cwfs mount --all-buckets MOUNTPOINT`."
    )
    read_only: bool = _switch(
        "mount read-only: every write fails with EROFS and no write request is made."
    )
    uid: int = option(
        os.getuid(),
        "owner shown for every file and directory.",
        parse_int,
        metavar="UID",
        default_text="the mounting user",
    )
    gid: int = option(
        os.getgid(),
        "group shown for every file and directory.",
        parse_int,
        metavar="GID",
        default_text="the mounting user's group",
    )
    file_mode: int = option(
        0o644,
        "permission bits shown for files (octal).",
        parse_octal,
        metavar="MODE",
        show=_show_octal,
    )
    dir_mode: int = option(
        0o755,
        "permission bits shown for directories (octal).",
        parse_octal,
        metavar="MODE",
        show=_show_octal,
    )
    allow_other: bool = _switch(
        "let other users access the mount (needs `user_allow_other` in `/etc/fuse.conf` for "
        "non-root)."
    )
    fuse_options: tuple[str, ...] = option(
        (),
        "more options for the kernel's FUSE mount, comma-separated: generic mount flags "
        "(`noatime`, `nodev`, `nosuid`, `noexec`, `sync`, ...), `max_read=N` and SELinux "
        "`context=`; what `mount -o` gives that is not a cwfs option comes here.",
        parse_fuse_options,
        metavar="LIST",
        show=lambda options: ",".join(options) or "none",
    )
    foreground: bool = _switch("stay attached; log to stderr unless `--log-file`.", aliases=("-f",))
    log_level: str = option(
        "INFO",
        "how much to log. boto3/botocore never log below INFO (their debug output carries "
        "request headers).",
        Choice(("DEBUG", "INFO", "WARNING", "ERROR")),
    )
    log_file: Path | None = option(
        None,
        "where logs go.",
        Path,
        metavar="PATH",
        default_text="stderr in the foreground, `~/.local/state/cwfs/<bucket>.log` in the "
        "background",
    )
    metrics_port: tuple[str, int] | None = option(
        None,
        "serve the mount's statistics (`cwfs stats`) for Prometheus at "
        "`http://ADDRESS:PORT/metrics`; a bare port listens on every interface.",
        parse_listen,
        metavar="[ADDRESS:]PORT",
        default_text="off",
    )
    metadata_ttl: float = _seconds(
        1.0,
        "seconds attributes and directory listings are trusted (also the kernel's entry and "
        "attribute timeouts); `indefinite` for data nobody else changes.",
        parse_ttl,
    )
    negative_ttl: float = _seconds(
        1.0, "seconds a missing name is remembered; `indefinite` allowed.", parse_ttl
    )
    metadata_cache_entries: int = _count(
        100_000,
        "names each metadata cache (attributes, missing names, listings) holds at most; "
        "a directory with more is streamed, not kept (about 175 bytes a name).",
    )
    lota: str = option(
        "auto",
        "read data through LOTA: when it answers at mount, always, or never.",
        Choice(("auto", "on", "off")),
    )
    lota_endpoint: str = option(
        LOTA_ENDPOINT,
        "the LOTA endpoint (virtual-hosted: `<bucket>.cwlota.com`).",
        parse_url,
        metavar="URL",
    )
    read_part_size: int = _size(
        16 << 20, "the largest read-ahead GET (LOTA wants 15 MB or more per request)."
    )
    max_read_ahead: int = _size(64 << 20, "the read-ahead window of one sequential reader at most.")
    direct_io: bool = _switch(
        "bypass the kernel page cache: a read goes to cwfs's read-ahead as the application "
        "asked it, with no copy into the page cache. Less CPU and memory for large streaming "
        "reads (training data read once, in blocks of 128 KiB or more), and one GET per random "
        "read (two with the page cache, when the read is not page-aligned); but nothing is kept "
        "for a second pass, small reads each cost a FUSE round trip, and shared `mmap` fails "
        "with ENODEV. s3fs (`-o direct_io`) and rclone (`--direct-io`) offer the same."
    )
    exact_metadata: bool = _switch(
        "`stat` of a file known only from a listing sends a HeadObject for the mtime and mode "
        "stored with it (listings carry no user metadata). Makes `rsync -a` between mounts skip "
        "unchanged files; costs a request per file stat'd, as s3fs and rclone mount do."
    )
    max_memory: int = _size(
        None,
        "memory for all read-ahead buffers together; readers (and with `--all-buckets`, "
        "buckets) share it.",
        factory=default_max_memory,
        default_text="RAM/8, 256M..4G",
    )
    max_concurrency: int = _count(64, "parallel S3 requests (worker threads and HTTP connections).")
    max_attempts: int = _count(
        10,
        "attempts per request on throttling (`SlowDown`/503, 429), 5xx, connection errors and "
        "timeouts, with exponential back-off and jitter (each request counts its own); then the "
        "call fails (EIO, ETIMEDOUT after timeouts) with the S3 code in the log.",
    )
    timeout_attempts: int = _count(
        3,
        "a request also fails once this many of its attempts timed out: a server that stops "
        "answering fails a call in about this many times the timeout.",
    )
    connect_timeout: float = _seconds(
        10.0, "seconds to wait for a connection to the endpoint before the attempt fails."
    )
    read_timeout: float = _seconds(
        10.0,
        "seconds without a byte of the answer before the attempt fails; a slow answer that "
        "keeps coming is never cut. At least 120 for requests the server answers once it has "
        "built a whole object (CompleteMultipartUpload, copies, RenameObject).",
    )
    fuse_tasks: int = _count(
        1024,
        "FUSE requests served concurrently: requests waiting on a slow or stalled store must "
        "leave room for those the caches answer (a waiting request costs a few KiB).",
    )
    cache_dir: Path | None = option(
        None,
        "where files being written are staged until uploaded; data that could not be uploaded "
        "stays here.",
        Path,
        metavar="DIR",
        default_text="a private 0700 directory per mount in `~/.cache/cwfs/`",
    )
    attribute_store: str = option(
        "",
        "where the exact mtime and mode of objects this machine wrote or looked up are kept "
        "across mounts (SQLite, shared by mounts); `off` keeps them in memory only.",
        metavar="FILE",
        default_text="`~/.cache/cwfs/attributes.sqlite`",
    )
    cache_limit: int = _size(
        16 << 30,
        "staged bytes, of every file open for writing together (with `--all-buckets`, in "
        "every bucket), before writers wait for uploads (`K`, `M`, `G`, `T`: binary units).",
    )
    part_size: int = _size(
        50 << 20,
        "multipart part size, and the largest file sent as one PutObject (5M..5G, S3's limits); "
        "a file being written sends each part once it grows past it.",
        MIN_PART_SIZE,
        MAX_PART_SIZE,
    )
    upload_concurrency: int = _count(
        4,
        "parts uploaded in parallel, over all files (read from the staged file as they are "
        "sent, not held in memory).",
    )
    conflict_retries: int = _count(
        5,
        "retries of a conditional upload answered 409 ConditionalRequestConflict (another "
        "write to the key was in flight).",
        low=0,
    )
    rename_mode: str = option(
        "auto",
        "`auto`: RenameObject, or CopyObject + DeleteObject on a bucket that has had versioning "
        "(read at mount) or once the store refuses RenameObject; `atomic`: RenameObject only, "
        "renames fail with ENOTSUP where it is not allowed; `copy`: always copy + delete (not "
        "atomic).",
        Choice(("auto", "atomic", "copy")),
    )
    checksum: str = option(
        "crc32c",
        "the checksum cwfs computes and sends with every object and part. Use `off` for a store "
        "that rejects checksum headers.",
        Choice(("crc32c", "crc64nvme", "off")),
    )
    unmount_timeout: float = _seconds(
        20.0,
        "how long SIGINT/SIGTERM wait for requests in flight (uploads on close) before "
        "unmounting without them; a second signal stops waiting. The process then exits with "
        "status 3, the writers still waiting get an error, and their data stays in the cache "
        "directory. (Without that wait, files still open for writing at the signal are not "
        "uploaded: each is named in the log and the exit status is 4.) Below Kubernetes' 30 s "
        "grace period, so the mount point is not left dead by SIGKILL.",
    )
    credentials_file: Path | None = None  # from the profile (see `_resolve`), no option
    config_file: Path | None = None

    @property
    def store_settings(self) -> StoreSettings:
        """What the mount's object store needs of this configuration."""
        return StoreSettings(**{f.name: getattr(self, f.name) for f in fields(StoreSettings)})


@dataclass(frozen=True)
class StoreSettings:
    """What the store layer needs to reach a bucket: endpoints, credentials, limits.

    A part of `Config`, so that a command that mounts nothing (``cwfs warm``) can make
    one without a mount point.
    """

    bucket: str
    endpoint: str
    lota_endpoint: str
    region: str | None
    addressing_style: str
    profile: str | None
    credentials_file: Path | None
    config_file: Path | None
    connect_timeout: float
    read_timeout: float
    max_attempts: int
    timeout_attempts: int
    max_concurrency: int

    @property
    def is_coreweave(self) -> bool:
        """Whether the endpoint is one of CoreWeave's (TLS 1.3, virtual-hosted only)."""
        host = urlparse(self.endpoint).hostname or ""
        return any(host == d or host.endswith("." + d) for d in COREWEAVE_DOMAINS)

    def via_lota(self, max_attempts: int) -> StoreSettings:
        """The same bucket through the LOTA endpoint, giving up after ``max_attempts``."""
        return replace(self, endpoint=self.lota_endpoint, max_attempts=max_attempts)


def _options() -> tuple[Option, ...]:
    return tuple(
        replace(spec, name=f.name, default=None if f.default is MISSING else f.default)
        for f in fields(Config)
        if (spec := f.metadata.get("option")) is not None
    )


OPTIONS = _options()
"""Every mount option, in the order of `Config`, ``--help`` and the docs table."""
_BY_NAME = {o.name: o for o in OPTIONS}


def mount_option(name: str) -> Option | None:
    """The ``cwfs mount`` option called ``name`` (its `Config` field), if there is one."""
    return _BY_NAME.get(name)


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare ``cwfs mount``'s arguments: the bucket, the mount point, every option."""
    parser.add_argument("bucket", nargs="?", default="", help="bucket to mount")
    parser.add_argument("mountpoint", type=Path, help="directory to mount it on")
    add_options(parser, [spec.name for spec in OPTIONS])


def add_options(parser: argparse.ArgumentParser, names: Sequence[str]) -> None:
    """Declare the flags of the options ``names``, one per `Option`.

    Flags keep their text (None when absent), switches the text ``1``: `build_config`
    and `store_settings` parse them exactly as they parse the ``CWFS_`` variables.
    """
    for spec in (_BY_NAME[name] for name in names):
        text = f"{spec.help} Default: {spec.default_doc}. Environment: {spec.env}."
        text = text.replace("`", "").replace("%", "%%")
        if spec.is_switch:
            kind: dict[str, Any] = {"action": "store_const", "const": "1"}
        else:
            kind = {"metavar": spec.value_name}
        parser.add_argument(*spec.flags, dest=spec.name, help=text, **kind)


def _given(spec: Option, args: argparse.Namespace, environ: Mapping[str, str]) -> Any:
    """The option's value from its flag, else from its variable, else None.

    Options without a flag in ``args`` (commands other than ``cwfs mount``) stay None.
    """
    if not hasattr(args, spec.name):
        return None
    text = getattr(args, spec.name)
    if text is not None:
        return spec.convert(text, spec.flags[0])
    text = environ.get(spec.env, "")
    return spec.convert(text, spec.env) if text else None


def _coreweave_files(home: Path) -> tuple[Path, Path]:
    base = home / ".coreweave"
    return base / "cw.credentials", base / "cw.config"


def _profile_settings(config_file: Path | None, profile: str | None) -> dict[str, Any]:
    """Endpoint, region and addressing style from an AWS-format config file, if any."""
    if config_file is None or not config_file.is_file():
        return {}
    parser = configparser.ConfigParser()
    parser.read(config_file)
    name = profile or "default"
    section = name if name == "default" else f"profile {name}"
    if not parser.has_section(section):
        return {}
    values = dict(parser[section])
    texts = {"endpoint": values.get("endpoint_url"), "region": values.get("region")}
    for line in values.get("s3", "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "addressing_style":
            texts["addressing_style"] = value.strip()
    source = f"{config_file} [{section}]"
    return {
        key: _BY_NAME[key].convert(text, f"{source} {key}") for key, text in texts.items() if text
    }


def _credential_files(
    values: dict[str, Any], environ: Mapping[str, str], home: Path
) -> dict[str, Any]:
    """The profile and the files to take it from: CoreWeave's when they define it."""
    cw_credentials, cw_config = _coreweave_files(home)
    profile = values.get("profile") or environ.get("AWS_PROFILE")
    if profile is None and cw_credentials.is_file() and not _has_env_keys(environ):
        profile = COREWEAVE_PROFILE
    found = {"profile": profile, "credentials_file": None, "config_file": None}
    if profile is not None and _file_has_profile(cw_credentials, profile):
        found.update(credentials_file=cw_credentials, config_file=cw_config)
    return found


def _resolve(
    args: argparse.Namespace, environ: Mapping[str, str] | None, home: Path | None
) -> dict[str, Any]:
    """The options given by flags, ``CWFS_*`` environment and profile files, parsed."""
    environ = os.environ if environ is None else environ
    home = home or Path(environ.get("HOME", str(Path.home())))
    given = {spec.name: _given(spec, args, environ) for spec in OPTIONS}
    values = {name: value for name, value in given.items() if value is not None}
    values.update(_credential_files(values, environ, home))
    standard_config = Path(environ.get("AWS_CONFIG_FILE", home / ".aws" / "config"))
    profile_file = values["config_file"] or standard_config
    for key, value in _profile_settings(profile_file, values["profile"]).items():
        values.setdefault(key, value)
    return values


def build_config(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None, home: Path | None = None
) -> Config:
    """Merge flags, ``CWFS_*`` environment and profile files into one validated Config."""
    values = _resolve(args, environ, home)
    values["prefix"] = _normalise_prefix(values.get("prefix", ""))
    mountpoint = Path(args.mountpoint).resolve()  # as the mount table shows it
    config = Config(bucket=args.bucket or "", mountpoint=mountpoint, **values)
    _check_bucket(config)
    _check_addressing(config.store_settings)
    _check_mountpoint(config.mountpoint)
    return config


def _check_bucket(config: Config) -> None:
    if config.all_buckets and config.bucket:
        raise ConfigError(f"give a bucket ({config.bucket!r}) or --all-buckets, not both")
    if not config.all_buckets and not config.bucket:
        raise ConfigError("no bucket given: cwfs mount BUCKET MOUNTPOINT, or --all-buckets")
    if config.all_buckets and config.prefix:
        raise ConfigError("--prefix names keys of one bucket: it cannot go with --all-buckets")


def _check_mountpoint(path: Path) -> None:
    """A mount point must be a directory one can stat: a dead FUSE mount (its process
    was killed, so stat fails with ENOTCONN) is refused with the command that clears it.
    """
    try:
        is_dir = stat.S_ISDIR(path.stat().st_mode)
    except FileNotFoundError:
        is_dir = False
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise ConfigError(
                f"mount point {path} is a dead FUSE mount (Transport endpoint is not "
                f"connected: the process that served it is gone); unmount it first with "
                f"`fusermount3 -u {path}`"
            ) from None
        raise ConfigError(f"mount point {path}: {exc.strerror or exc}") from None
    if not is_dir:
        raise ConfigError(f"mount point {path} is not a directory")


def store_settings(
    bucket: str,
    args: argparse.Namespace,
    environ: Mapping[str, str] | None = None,
    home: Path | None = None,
) -> StoreSettings:
    """Settings to reach ``bucket`` for a command that mounts nothing (``cwfs warm``).

    As for a mount: the flags ``args`` has, then the ``CWFS_`` variables, then the
    profile files, then the defaults; other options' variables are not read.
    """
    names = [f.name for f in fields(StoreSettings) if f.name in _BY_NAME]
    given = argparse.Namespace(**{n: getattr(args, n, None) for n in names})
    values = _resolve(given, environ, home)
    chosen = {n: values.get(n, _BY_NAME[n].default) for n in names}
    files = {n: values[n] for n in ("credentials_file", "config_file")}
    settings = StoreSettings(bucket, **chosen, **files)
    _check_addressing(settings)
    return settings


def option_values(
    args: argparse.Namespace, names: Sequence[str], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Options a command other than ``cwfs mount`` takes beside the store's (``cwfs
    recover --part-size``): from its flags, else the ``CWFS_`` variables, else the defaults.
    """
    environ = os.environ if environ is None else environ
    given = {name: _given(_BY_NAME[name], args, environ) for name in names}
    return {name: _BY_NAME[name].default if v is None else v for name, v in given.items()}


def _has_env_keys(environ: Mapping[str, str]) -> bool:
    return bool(environ.get("ACCESS_KEY_ID") and environ.get("SECRET_ACCESS_KEY"))


def _file_has_profile(path: Path, profile: str) -> bool:
    if not path.is_file():
        return False
    parser = configparser.ConfigParser()
    parser.read(path)
    return parser.has_section(profile)


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""


def _check_addressing(settings: StoreSettings) -> None:
    if settings.is_coreweave and settings.addressing_style != "virtual":
        raise ConfigError(
            "CoreWeave endpoints accept virtual-hosted addressing only: "
            "drop --addressing-style path"
        )
