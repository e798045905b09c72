"""Every mount option: one definition gives its flag, its CWFS_ variable and its docs row."""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path

import pytest

from cwfs.config import (
    OPTIONS,
    Choice,
    Config,
    ConfigError,
    Option,
    add_mount_arguments,
    build_config,
    store_settings,
)

DOCS = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
# Texts tried on every option: each must parse the same (or fail the same) as flag and variable.
SAMPLES = (
    "1", "0", "-1", "2.5", "abc", "16M", "5G", "6G", "0644", "9", "indefinite",
    "http://s3.example:9000", "ftp://x", "yes", "OFF", "DEBUG", "debug", "Path", "CRC32C",
    "noatime,nodev", "max_read=131072",
)  # fmt: skip


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_mount_arguments(parser)
    return parser


def outcome(
    mountpoint: Path, argv: list[str], environ: dict[str, str], bucket: str = "bkt"
) -> object:
    """The option values build_config makes of these flags and environment, or its error
    (with --all-buckets, of a command line that names no bucket)."""
    args = parser().parse_args([*([bucket] if bucket else []), str(mountpoint), *argv])
    try:
        config = build_config(args, environ=environ, home=mountpoint)
    except ConfigError as exc:
        if bucket and str(exc).endswith("or --all-buckets, not both"):
            return outcome(mountpoint, argv, environ, bucket="")
        return str(exc)
    return {spec.name: getattr(config, spec.name) for spec in OPTIONS}


def texts(spec: Option) -> tuple[str, ...]:
    words = spec.parse.values if isinstance(spec.parse, Choice) else ()
    return SAMPLES + tuple(words) + tuple(w.swapcase() for w in words)


@pytest.mark.parametrize("spec", [s for s in OPTIONS if not s.is_switch], ids=lambda s: s.name)
def test_every_option_parses_alike_as_flag_and_variable(tmp_path, spec):
    accepted = refused = 0
    for text in texts(spec):
        from_flag = outcome(tmp_path, [f"{spec.flags[0]}={text}"], {})
        from_env = outcome(tmp_path, [], {spec.env: text})
        if isinstance(from_flag, str):
            assert from_env == from_flag.replace(f"{spec.flags[0]}=", f"{spec.env}="), text
            refused += spec.env in from_env
        else:
            assert from_env == from_flag, text
            accepted += 1
    assert accepted, f"no sample is a valid {spec.name}"
    assert refused or spec.parse in (str, Path), f"no sample is refused as {spec.name}"


@pytest.mark.parametrize("spec", [s for s in OPTIONS if s.is_switch], ids=lambda s: s.name)
def test_every_switch_reads_words_from_the_environment(tmp_path, spec):
    on, off = outcome(tmp_path, [spec.flags[0]], {}), outcome(tmp_path, [], {})
    assert isinstance(on, dict) and on[spec.name] is True and off[spec.name] is False
    for text in ("1", "true", "Yes", "ON"):
        assert outcome(tmp_path, [], {spec.env: text}) == on
    for text in ("0", "false", "No", "off"):
        assert outcome(tmp_path, [], {spec.env: text}) == off
    error = outcome(tmp_path, [], {spec.env: "maybe"})
    assert isinstance(error, str) and error.startswith(f"{spec.env}='maybe': not a boolean")


def test_env_values_are_converted_and_folded(tmp_path):
    environ = {
        "CWFS_READ_TIMEOUT": "30", "CWFS_LOG_LEVEL": "debug", "CWFS_CHECKSUM": "CRC32C",
        "CWFS_FUSE_TASKS": "8", "CWFS_CONNECT_TIMEOUT": "2.5", "CWFS_CONFLICT_RETRIES": "0",
    }  # fmt: skip
    values = outcome(tmp_path, [], environ)
    assert isinstance(values, dict)
    names = ("read_timeout", "log_level", "checksum", "fuse_tasks", "connect_timeout")
    assert [values[name] for name in names] == [30.0, "DEBUG", "crc32c", 8, 2.5]
    assert values["conflict_retries"] == 0
    error = outcome(tmp_path, [], {"CWFS_RENAME_MODE": "bogus"})
    assert error == "CWFS_RENAME_MODE='bogus': must be one of auto, atomic, copy"


def test_profile_file_values_are_parsed_like_options(tmp_path):
    (tmp_path / ".aws").mkdir()
    (tmp_path / ".aws" / "config").write_text("[default]\ns3 =\n    addressing_style = sideways\n")
    error = outcome(tmp_path, [], {})
    assert isinstance(error, str)
    assert "addressing_style='sideways': must be one of virtual, path" in error


def test_every_config_field_but_the_derived_ones_is_an_option():
    derived = {"bucket", "mountpoint", "credentials_file", "config_file"}
    assert {f.name for f in fields(Config)} - derived == {spec.name for spec in OPTIONS}


def docs_row(spec: Option) -> str:
    """The row of docs/configuration.md's option table for ``spec``."""
    value = f" {spec.value_name}" if spec.value_name else ""
    flags = ", ".join(f"`{flag}{value if i == 0 else ''}`" for i, flag in enumerate(spec.flags))
    flags = flags.replace("|", "\\|")
    return f"| {flags} | `{spec.env}` | {spec.default_doc} | {spec.help} |"


def test_the_docs_table_is_the_options_table():
    rows = [line for line in DOCS.read_text().splitlines() if re.match(r"\| `-", line)]
    expected = [docs_row(spec) for spec in OPTIONS]
    assert rows == expected, "docs/configuration.md's table should read:\n" + "\n".join(expected)
    documented = {flag for row in rows for flag in re.findall(r"`(-[-\w]+)", row.split(" | ")[0])}
    flags = {flag for action in parser()._actions for flag in action.option_strings}
    assert documented == flags - {"-h", "--help"}


def test_store_settings_without_a_mount_point(tmp_path):
    """cwfs warm: its flags, then the store options' variables, then the defaults."""
    args = argparse.Namespace(endpoint="http://s3.example:9000", region=None)
    environ = {"CWFS_REGION": "RNO2A", "CWFS_READ_TIMEOUT": "5", "CWFS_LOG_LEVEL": "bogus"}
    settings = store_settings("bkt", args, environ=environ, home=tmp_path)
    assert (settings.endpoint, settings.region) == ("http://s3.example:9000", "RNO2A")
    assert settings.read_timeout == 5.0 and settings.max_attempts == 10  # a default
    lota = settings.via_lota(3)
    assert (lota.endpoint, lota.max_attempts, lota.bucket) == ("http://cwlota.com", 3, "bkt")


def test_the_store_settings_are_the_mounts(tmp_path):
    args = parser().parse_args(["bkt", str(tmp_path), "--endpoint=http://s3.example:9000"])
    config = build_config(args, environ={"CWFS_MAX_ATTEMPTS": "3"}, home=tmp_path)
    settings = config.store_settings
    assert (settings.endpoint, settings.max_attempts) == (config.endpoint, 3)
    assert settings.bucket == config.bucket and not settings.is_coreweave


def test_a_mount_names_one_bucket_or_all_of_them(tmp_path):
    assert outcome(tmp_path, [], {}, bucket="") == (
        "no bucket given: cwfs mount BUCKET MOUNTPOINT, or --all-buckets"
    )
    args = parser().parse_args(["bkt", str(tmp_path), "--all-buckets"])
    with pytest.raises(ConfigError, match=r"give a bucket \('bkt'\) or --all-buckets, not both"):
        build_config(args, environ={}, home=tmp_path)
    every = outcome(tmp_path, ["--all-buckets"], {}, bucket="")
    assert isinstance(every, dict) and every["all_buckets"] is True
    assert outcome(tmp_path, ["--all-buckets", "--prefix", "p/"], {}, bucket="") == (
        "--prefix names keys of one bucket: it cannot go with --all-buckets"
    )
