"""Pure logic: configuration precedence, inode bookkeeping, name rules, the TLS 1.3 probe."""

from __future__ import annotations

import argparse
import math
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from cwfs.attrs import file_attrs, format_mtime, parse_mtime
from cwfs.config import ConfigError, add_mount_arguments, build_config, parse_size
from cwfs.errors import NotFound
from cwfs.inodes import ROOT_INODE, InodeTable
from cwfs.mountrecords import cwfs_mountpoints
from cwfs.namespace import invalid_name_reason
from cwfs.preflight import MountError, require_tls13
from cwfs.store import quoted, timestamp_seconds
from cwfs.upload import part_size_for


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_mount_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_beat_env_beat_profile_beat_defaults(tmp_path):
    home = tmp_path
    (home / ".coreweave").mkdir()
    (home / ".coreweave" / "cw.credentials").write_text(
        "[cw]\naws_access_key_id = a\naws_secret_access_key = b\n"
    )
    (home / ".coreweave" / "cw.config").write_text(
        "[profile cw]\nendpoint_url = http://profile.example:1\nregion = US-EAST-04A\ns3 =\n    addressing_style = path\n"
    )
    env = {"CWFS_METADATA_TTL": "5", "CWFS_REGION": "US-CENTRAL-05A", "CWFS_READ_ONLY": "yes"}
    config = build_config(parse("bkt", str(tmp_path), "--region", "RNO2A"), environ=env, home=home)
    assert config.region == "RNO2A"  # flag over env and profile
    assert config.metadata_ttl == 5.0 and config.read_only  # env over default
    assert (
        config.endpoint == "http://profile.example:1" and config.addressing_style == "path"
    )  # profile
    assert (
        config.profile == "cw" and config.credentials_file == home / ".coreweave" / "cw.credentials"
    )
    assert config.max_concurrency == 64  # default


def test_env_keys_take_precedence_over_the_cw_profile(tmp_path):
    (tmp_path / ".coreweave").mkdir()
    (tmp_path / ".coreweave" / "cw.credentials").write_text(
        "[cw]\naws_access_key_id = a\naws_secret_access_key = b\n"
    )
    env = {"ACCESS_KEY_ID": "k", "SECRET_ACCESS_KEY": "s"}
    config = build_config(parse("bkt", str(tmp_path)), environ=env, home=tmp_path)
    assert config.profile is None and config.credentials_file is None


def test_defaults_target_coreweave_with_virtual_hosting(tmp_path):
    config = build_config(
        parse("bkt", str(tmp_path), "--prefix", "/a/b"), environ={}, home=tmp_path
    )
    assert config.endpoint == "https://cwobject.com" and config.addressing_style == "virtual"
    assert config.store_settings.is_coreweave and config.prefix == "a/b/"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ("--endpoint", "https://cwobject.com", "--addressing-style", "path"),
            "virtual-hosted addressing only",
        ),
        (("--endpoint", "ftp://x"), r"http\(s\) URL"),
        (("--metadata-ttl", "-1"), "must not be negative"),
    ],
)
def test_invalid_options_are_refused_with_a_reason(tmp_path, argv, message):
    with pytest.raises(ConfigError, match=message):
        build_config(parse("bkt", str(tmp_path), *argv), environ={}, home=tmp_path)


def test_missing_mountpoint_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="not a directory"):
        build_config(parse("bkt", str(tmp_path / "absent")), environ={}, home=tmp_path)


def test_inodes_stay_bound_until_forgotten():
    table = InodeTable()
    a = table.ref("a")
    assert table.ref("a") == a and table.path(a) == "a"
    table.forget(a, 1)
    assert table.path(a) == "a"
    table.forget(a, 1)
    with pytest.raises(NotFound):
        table.path(a)
    assert table.ref("a") != a  # numbers are never reused
    table.forget(ROOT_INODE, 10)
    assert table.path(ROOT_INODE) == ""


@pytest.mark.parametrize(
    "name, ok",
    [
        ("file.txt", True),
        ("", False),
        (".", False),
        ("..", False),
        ("a\0b", False),
        ("x" * 255, True),
        ("x" * 256, False),
        ("é" * 128, False),
    ],
)
def test_name_rules(name, ok):
    assert (invalid_name_reason(name) is None) == ok


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def _tls_server(
    certificate, maximum: ssl.TLSVersion
) -> tuple[int, threading.Thread, socket.socket]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    context.maximum_version = maximum
    listener = socket.create_server(("127.0.0.1", 0))

    def serve_one() -> None:
        conn, _ = listener.accept()
        try:
            with context.wrap_socket(conn, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, listener


@pytest.mark.parametrize(
    "maximum, accepted", [(ssl.TLSVersion.TLSv1_2, False), (ssl.TLSVersion.TLSv1_3, True)]
)
def test_tls13_probe(certificate, maximum, accepted):
    port, thread, listener = _tls_server(certificate, maximum)
    client = ssl.create_default_context(cafile=str(certificate[0]))
    try:
        if accepted:
            require_tls13("localhost", port, timeout=5, context=client)
        else:
            with pytest.raises(MountError, match="TLS 1.3"):
                require_tls13("localhost", port, timeout=5, context=client)
    finally:
        thread.join(5)
        listener.close()


@pytest.mark.parametrize(
    "text, size",
    [
        ("1048576", 1 << 20),
        ("512K", 512 << 10),
        ("50M", 50 << 20),
        ("16G", 16 << 30),
        ("1.5GiB", 3 << 29),
    ],
)
def test_sizes(text, size):
    assert parse_size(text) == size


def test_part_size_stays_within_s3_limits():
    assert part_size_for(200 << 20, 50 << 20) == 50 << 20
    huge = 1 << 40  # 1 TiB at 50 MiB parts would need 20,972 parts
    assert math.ceil(huge / part_size_for(huge, 50 << 20)) <= 10_000
    assert part_size_for(48 << 40, 50 << 20) <= 5 << 30


@pytest.mark.parametrize("ns", [0, 1_600_000_000_123_456_789, 1_000_000_000])
def test_mtime_metadata_round_trips_exactly(ns):
    assert parse_mtime(format_mtime(ns)) == ns


def test_mtime_metadata_from_other_tools():
    assert parse_mtime("1600000000") == 1_600_000_000_000_000_000  # s3fs: integer seconds
    assert parse_mtime("1600000000.5") == 1_600_000_000_500_000_000  # rclone: float seconds
    attrs = file_attrs(3, 7, '"e"', {"mtime": "12.000000001", "mode": str(0o100640)})
    assert (attrs.mtime_ns, attrs.mode) == (12_000_000_001, 0o640)
    assert file_attrs(3, 7, '"e"', {"mtime": "garbage"}).mtime_ns == 7


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-26T10:00:01.000Z",
        "2026-11-26T10:00:01Z",
        "Thu, 26 Nov 2026 10:00:01 GMT",
        "2026-11-26T10:00:01.000000+00:00",
    ],
)
def test_s3_timestamps_in_every_form(text):
    """Listings give ISO 8601, HeadObject an RFC 7231 date; botocore leaves both as text."""
    assert timestamp_seconds(text) == 1795687201.0


def test_mount_table_paths_are_unescaped_as_the_kernel_escaped_them():
    table = (
        b"36 25 0:50 / /tmp/a\\040b\\134c\\011d\\012\xc3\xa9 rw,nosuid - fuse.cwfs cwfs rw\n"
        b"37 25 0:51 / /srv/data rw - ext4 /dev/sda1 rw\n"
    )
    assert cwfs_mountpoints(table) == ["/tmp/a b\\c\td\n\u00e9"]


def test_etags_are_compared_in_s3s_quoted_form():
    assert quoted("abc") == quoted('"abc"') == '"abc"'
    assert quoted(None) is None
