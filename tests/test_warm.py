"""``cwfs warm``: one ranged HeadObject per object of 4 MB or more, on the LOTA endpoint."""

from __future__ import annotations

import subprocess
import sys

from conftest import cwfs_env

MB = 1_000_000


def seed_dataset(server, bucket):
    sizes = {
        "data/big-0": 5 * MB,
        "data/big-1": 4 * MB,
        "data/sub/big-2": 6 * MB,
        "data/small": 3_999_999,
        "data/tiny": 10,
        "other/big": 5 * MB,
    }
    server.seed(bucket, [{"key": k, "size": v} for k, v in sizes.items()])
    return sizes


def warm(server, *targets, extra=()):
    return subprocess.run(
        [sys.executable, "-m", "cwfs", "warm", *map(str, targets), *extra],
        env=cwfs_env(server), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def prestaged(server):
    """Keys pre-staged on the LOTA endpoint (where every HeadObject must be the ranged kind)."""
    heads = [r for r in server.requests() if r["op"] == "HeadObject" and r["endpoint"] == "lota"]
    assert all(r["headers"].get("Range") == "bytes=0-0" for r in heads), heads
    return sorted(r["key"] for r in heads)


def test_warm_a_mounted_directory(server, bucket, mount):
    seed_dataset(server, bucket)
    mnt = mount(bucket, "--lota-endpoint", server.lota_url).path
    (mnt / "data").stat()
    server.reset()
    result = warm(server, mnt / "data")
    assert result.returncode == 0, result.stderr
    assert prestaged(server) == ["data/big-0", "data/big-1", "data/sub/big-2"]
    assert server.all_counts()["lota"] == {"HeadObject": 3}
    assert (
        "warmed 3 objects" in result.stderr
        and "skipped 2 smaller than 4 MB" in result.stderr
        and "0 errors" in result.stderr
    )


def test_warm_finds_a_mount_whose_path_has_spaces_and_accents(server, bucket, mount):
    """The mount table escapes a space as \\040 and leaves UTF-8 bytes as they are."""
    seed_dataset(server, bucket)
    mnt = mount(bucket, "--lota-endpoint", server.lota_url, name="données d'entraînement").path
    server.reset()
    result = warm(server, mnt / "data" / "big-0")
    assert result.returncode == 0, result.stderr
    assert prestaged(server) == ["data/big-0"]


def test_warm_an_s3_url_and_a_single_file(server, bucket, mount):
    seed_dataset(server, bucket)
    mnt = mount(bucket, "--lota-endpoint", server.lota_url).path
    server.reset()
    options = (
        "--endpoint",
        server.url,
        "--lota-endpoint",
        server.lota_url,
        "--addressing-style",
        "path",
    )
    result = warm(
        server,
        f"s3://{bucket}/other/",
        mnt / "data" / "big-0",
        mnt / "data" / "tiny",
        extra=options,
    )
    assert result.returncode == 0, result.stderr
    assert prestaged(server) == ["data/big-0", "other/big"]


def test_warm_reports_errors(server, bucket, mount):
    seed_dataset(server, bucket)
    mnt = mount(bucket, "--lota-endpoint", server.lota_url).path
    server.add_fault(
        op="HeadObject",
        endpoint="lota",
        key_prefix="data/big-1",
        status=403,
        code="AccessDenied",
        message="no",
        times=-1,
    )
    try:
        result = warm(server, mnt / "data")
    finally:
        server.clear_faults()
    assert result.returncode == 1
    assert (
        "warmed 2 objects" in result.stderr
        and "1 errors" in result.stderr
        and "data/big-1" in result.stderr
    )


def test_warm_refuses_paths_outside_a_mount(server, tmp_path):
    result = warm(server, tmp_path)
    assert result.returncode != 0 and "not on a cwfs mount" in result.stderr


def test_warm_with_rejected_credentials_says_so_without_a_traceback(server, bucket):
    """As ``cwfs mount`` does: one clear line, exit status 2."""
    seed_dataset(server, bucket)
    options = ("--endpoint", server.url, "--addressing-style", "path")
    result = subprocess.run(
        [sys.executable, "-m", "cwfs", "warm", f"s3://{bucket}/data/", *options],
        env=cwfs_env(server, SECRET_ACCESS_KEY="wrong"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "credentials were rejected" in result.stderr, result.stderr
