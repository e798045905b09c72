"""One immutable configuration, built once from CLI flags, environment and profile files.

Precedence for every option: command-line flag, then ``CWFS_<OPTION>`` in the
environment, then the profile's config file (endpoint, region, addressing style), then
the default.
"""

from __future__ import annotations

import argparse
import configparser
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlparse

PRIMARY_ENDPOINT = "https://cwobject.com"
LOTA_ENDPOINT = "http://cwlota.com"
COREWEAVE_DOMAINS = ("cwobject.com", "cwlota.com")
COREWEAVE_PROFILE = "cw"


def state_dir() -> Path:
    """Where cwfs keeps logs and records of running mounts (XDG_STATE_HOME/cwfs)."""
    return Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state")) / "cwfs"


def default_max_memory() -> int:
    """An eighth of the machine's memory, between 256 MiB and 4 GiB."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return min(max(total // 8, 256 << 20), 4 << 30)


class ConfigError(ValueError):
    """The options cannot describe a working mount; the message says why."""


@dataclass(frozen=True)
class Config:
    bucket: str
    mountpoint: Path
    prefix: str = ""
    endpoint: str = PRIMARY_ENDPOINT
    region: str | None = None
    addressing_style: str = "virtual"
    profile: str | None = None
    credentials_file: Path | None = None
    config_file: Path | None = None
    read_only: bool = False
    uid: int = os.getuid()
    gid: int = os.getgid()
    file_mode: int = 0o644
    dir_mode: int = 0o755
    allow_other: bool = False
    foreground: bool = False
    log_level: str = "INFO"
    log_file: Path | None = None
    metadata_ttl: float = 1.0
    negative_ttl: float = 1.0
    metadata_cache_entries: int = 100_000
    max_concurrency: int = 64
    max_attempts: int = 10
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    unmount_timeout: float = 20.0
    fuse_tasks: int = 32
    cache_dir: Path | None = None
    cache_limit: int = 16 << 30
    part_size: int = 50 << 20
    upload_concurrency: int = 4
    checksum: str = "crc32c"
    conflict_retries: int = 5
    rename_mode: str = "auto"
    lota: str = "auto"
    lota_endpoint: str = LOTA_ENDPOINT
    read_part_size: int = 16 << 20
    max_read_ahead: int = 64 << 20
    direct_io: bool = False
    exact_metadata: bool = False
    max_memory: int = field(default_factory=lambda: default_max_memory())

    @property
    def is_coreweave(self) -> bool:
        """Whether the endpoint is one of CoreWeave's (TLS 1.3, virtual-hosted only)."""
        host = urlparse(self.endpoint).hostname or ""
        return any(host == d or host.endswith("." + d) for d in COREWEAVE_DOMAINS)


def add_mount_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the ``cwfs mount`` options; defaults stay None so env/profile can fill them."""
    parser.add_argument("bucket", help="bucket to mount")
    parser.add_argument("mountpoint", type=Path, help="directory to mount it on")
    parser.add_argument("--endpoint", help=f"S3 endpoint URL (default {PRIMARY_ENDPOINT})")
    parser.add_argument("--region", help="availability zone, e.g. US-EAST-04A")
    parser.add_argument(
        "--profile",
        help=f"credentials profile (default: '{COREWEAVE_PROFILE}' when ~/.coreweave/cw.credentials exists)",
    )
    parser.add_argument("--addressing-style", choices=("virtual", "path"))
    parser.add_argument("--prefix", help="mount only keys below this prefix, e.g. data/train/")
    parser.add_argument("--read-only", action="store_true", default=None)
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    parser.add_argument("--file-mode", type=_octal, help="permission bits of files (octal, default 0644)")
    parser.add_argument("--dir-mode", type=_octal, help="permission bits of directories (octal, default 0755)")
    parser.add_argument("--allow-other", action="store_true", default=None)
    parser.add_argument("--foreground", "-f", action="store_true", default=None)
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"), type=str.upper)
    parser.add_argument("--log-file", type=Path, help="log here (default: stderr in the foreground)")
    parser.add_argument("--metadata-ttl", type=parse_ttl, help="seconds metadata is cached, or 'indefinite' (default 1)")
    parser.add_argument("--negative-ttl", type=parse_ttl, help="seconds a missing name is cached, or 'indefinite' (default 1)")
    parser.add_argument("--metadata-cache-entries", type=int, help="entries the metadata cache holds at most (default 100000)")
    parser.add_argument("--max-concurrency", type=int, help="parallel S3 requests (default 64)")
    parser.add_argument("--max-attempts", type=int, help="attempts per S3 request on throttling/5xx (default 10)")
    parser.add_argument(
        "--unmount-timeout", type=float, help="seconds SIGTERM waits for requests in flight before unmounting without them (default 20)"
    )
    parser.add_argument("--cache-dir", type=Path, help="where files being written are staged (default: a private directory per mount)")
    parser.add_argument("--cache-limit", type=parse_size, help="staged bytes before writers wait (default 16G)")
    parser.add_argument("--part-size", type=parse_size, help="multipart upload part size (default 50M, 5M..5G)")
    parser.add_argument("--upload-concurrency", type=int, help="parts uploaded in parallel per file (default 4)")
    parser.add_argument(
        "--rename-mode", choices=("auto", "atomic", "copy"), help="RenameObject, copy+delete, or auto (default: by the bucket's versioning)"
    )
    parser.add_argument("--lota", choices=("auto", "on", "off"), help="read data through LOTA (default auto: when it answers)")
    parser.add_argument("--lota-endpoint", help=f"LOTA endpoint URL (default {LOTA_ENDPOINT})")
    parser.add_argument("--read-part-size", type=parse_size, help="size of each read-ahead GET (default 16M)")
    parser.add_argument("--max-read-ahead", type=parse_size, help="read-ahead window of one sequential reader (default 64M)")
    parser.add_argument(
        "--direct-io", action="store_true", default=None, help="bypass the kernel page cache: less CPU and memory for large streaming reads"
    )
    parser.add_argument(
        "--exact-metadata",
        action="store_true",
        default=None,
        help="stat a file seen in a listing with HeadObject, for the mtime and mode stored with it (a request per file)",
    )
    parser.add_argument("--max-memory", type=parse_size, help="memory for all read-ahead buffers together (default RAM/8, 256M..4G)")
    parser.add_argument("--checksum", choices=CHECKSUMS, type=str.lower, help="checksum sent with uploads (default crc32c)")


CHECKSUMS = ("crc32c", "crc64nvme", "off")
MIN_PART_SIZE = 5 << 20
MAX_PART_SIZE = 5 << 30
_SIZE_SUFFIXES = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_ttl(text: str) -> float:
    """Seconds, or ``indefinite`` for data that never changes behind the mount's back."""
    if text.strip().lower() in ("indefinite", "inf", "forever"):
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds or 'indefinite': {text!r}") from None


def parse_size(text: str) -> int:
    """``1048576``, ``512K``, ``50M``, ``16G``, ``1T`` (binary units) as a byte count."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    number, suffix = (value[:-1], value[-1]) if value and value[-1] in _SIZE_SUFFIXES else (value, "")
    try:
        return int(float(number) * _SIZE_SUFFIXES[suffix])
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None


_ENV_TYPES = {
    "read_only": "bool",
    "allow_other": "bool",
    "foreground": "bool",
    "uid": int,
    "gid": int,
    "file_mode": "octal",
    "dir_mode": "octal",
    "metadata_ttl": parse_ttl,
    "negative_ttl": parse_ttl,
    "metadata_cache_entries": int,
    "max_concurrency": int,
    "max_attempts": int,
    "unmount_timeout": float,
    "log_file": Path,
    "cache_dir": Path,
    "cache_limit": parse_size,
    "part_size": parse_size,
    "upload_concurrency": int,
    "read_part_size": parse_size,
    "max_read_ahead": parse_size,
    "direct_io": "bool",
    "exact_metadata": "bool",
    "max_memory": parse_size,
}


def _octal(text: str) -> int:
    return int(text, 8)


def _from_env(name: str, environ: dict[str, str]) -> object | None:
    raw = environ.get("CWFS_" + name.upper())
    if raw is None or raw == "":
        return None
    kind = _ENV_TYPES.get(name, str)
    try:
        if kind == "bool":
            return raw.lower() in ("1", "true", "yes", "on")
        if kind == "octal":
            return _octal(raw)
        return kind(raw)  # type: ignore[operator]
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise ConfigError(f"CWFS_{name.upper()}={raw!r}: {exc}") from None


def _coreweave_files(home: Path) -> tuple[Path, Path]:
    base = home / ".coreweave"
    return base / "cw.credentials", base / "cw.config"


def _profile_settings(config_file: Path | None, profile: str | None) -> dict[str, str]:
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
    settings = {}
    if "endpoint_url" in values:
        settings["endpoint"] = values["endpoint_url"]
    if "region" in values:
        settings["region"] = values["region"]
    for line in values.get("s3", "").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "addressing_style" and value.strip():
            settings["addressing_style"] = value.strip()
    return settings


def build_config(args: argparse.Namespace, environ: dict[str, str] | None = None, home: Path | None = None) -> Config:
    """Merge flags, ``CWFS_*`` environment and profile files into one validated Config."""
    environ = dict(os.environ if environ is None else environ)
    home = home or Path(environ.get("HOME", str(Path.home())))
    values: dict[str, object] = {}
    for name in (f.name for f in fields(Config)):
        value = getattr(args, name, None)
        if value is None and name not in ("bucket", "mountpoint"):
            value = _from_env(name, environ)
        if value is not None:
            values[name] = value

    cw_credentials, cw_config = _coreweave_files(home)
    profile = values.get("profile") or environ.get("AWS_PROFILE")
    credentials_file = config_file = None
    if profile is None and cw_credentials.is_file() and not _has_env_keys(environ):
        profile = COREWEAVE_PROFILE
    if profile is not None and cw_credentials.is_file() and _file_has_profile(cw_credentials, str(profile)):
        credentials_file, config_file = cw_credentials, cw_config
    if profile is not None:
        values["profile"] = profile
    values["credentials_file"] = credentials_file
    values["config_file"] = config_file
    standard_config = Path(environ.get("AWS_CONFIG_FILE", home / ".aws" / "config"))
    for key, value in _profile_settings(config_file or standard_config, profile).items():
        values.setdefault(key, value)

    values["mountpoint"] = Path(values["mountpoint"]).resolve()  # type: ignore[arg-type]  # as the mount table shows it
    values["prefix"] = _normalise_prefix(str(values.get("prefix", "")))
    config = Config(**values)  # type: ignore[arg-type]
    _validate(config)
    return config


def _has_env_keys(environ: dict[str, str]) -> bool:
    return bool(environ.get("ACCESS_KEY_ID") and environ.get("SECRET_ACCESS_KEY"))


def _file_has_profile(path: Path, profile: str) -> bool:
    parser = configparser.ConfigParser()
    parser.read(path)
    return parser.has_section(profile)


def _normalise_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return prefix + "/" if prefix else ""


def _validate(config: Config) -> None:
    parsed = urlparse(config.endpoint)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(f"--endpoint must be an http(s) URL, got {config.endpoint!r}")
    if config.addressing_style not in ("virtual", "path"):
        raise ConfigError(f"addressing style must be virtual or path, got {config.addressing_style!r}")
    if config.is_coreweave and config.addressing_style != "virtual":
        raise ConfigError("CoreWeave endpoints accept virtual-hosted addressing only: drop --addressing-style path")
    if not config.mountpoint.is_dir():
        raise ConfigError(f"mount point {config.mountpoint} is not a directory")
    for name in ("metadata_ttl", "negative_ttl", "unmount_timeout"):
        if getattr(config, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must not be negative")
    if min(config.max_concurrency, config.max_attempts, config.upload_concurrency) < 1:
        raise ConfigError("--max-concurrency, --max-attempts and --upload-concurrency must be at least 1")
    if not MIN_PART_SIZE <= config.part_size <= MAX_PART_SIZE:
        raise ConfigError(f"--part-size must be between 5M and 5G (S3's limits), got {config.part_size}")
    if min(config.read_part_size, config.max_read_ahead, config.max_memory) < 1 << 20:
        raise ConfigError("--read-part-size, --max-read-ahead and --max-memory must be at least 1M")
    if config.checksum not in CHECKSUMS:
        raise ConfigError(f"--checksum must be one of {', '.join(CHECKSUMS)}")
