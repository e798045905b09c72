"""The ``cwfs mount`` command: readiness, clean shutdown, and failing fast with a reason."""

from __future__ import annotations

import errno
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import cwfs_env, is_mounted, stat_errno, unmount, wait_for

from cwfs.launch import MountStartError, start_mount

FAIL_FAST = 30  # seconds: generous for a loaded machine; a hang would be minutes


def cwfs(server, *args, env=None, timeout=FAIL_FAST):
    return subprocess.run(
        [sys.executable, "-m", "cwfs", *args],
        env=env or cwfs_env(server),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mount_args(server, bucket, mnt):
    return [
        "mount",
        bucket,
        str(mnt),
        "--endpoint",
        server.url,
        "--addressing-style",
        "path",
        "--log-file",
        str(mnt.parent / "bg.log"),
    ]


def _wait_unmounted_and_exited(mnt, pattern):
    deadline = time.monotonic() + FAIL_FAST
    while time.monotonic() < deadline:
        alive = subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0
        if not alive and not is_mounted(mnt):
            return
        time.sleep(0.1)
    raise AssertionError("the background mount process did not exit after unmount")


def test_background_mount_returns_when_ready(server, bucket, s3, tmp_path):
    s3.put_object(Bucket=bucket, Key="ready.txt", Body=b"yes")
    mnt = tmp_path / "bg"
    mnt.mkdir()
    try:
        result = cwfs(server, *mount_args(server, bucket, mnt))
        assert result.returncode == 0, result.stderr
        assert is_mounted(mnt)  # no polling: the command returned only once mounted
        if os.geteuid() == 0:  # only root may tune the kernel: then it is done before ready
            device = os.stat(mnt).st_dev
            read_ahead = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
            assert read_ahead.read_text().strip() == "2048"
        assert (mnt / "ready.txt").read_bytes() == b"yes"
    finally:
        unmount(mnt)
    _wait_unmounted_and_exited(mnt, f"cwfs mount {bucket} ")


def test_sigterm_unmounts_cleanly(server, bucket, mount):
    m = mount(bucket)
    m.proc.send_signal(signal.SIGTERM)
    assert m.proc.wait(timeout=FAIL_FAST) == 0
    assert not is_mounted(m.path)
    assert "unmounted" in m.log()


@pytest.mark.parametrize(
    "timeout, signals", [("2", 1), ("60", 2)], ids=["timeout", "second-signal"]
)
def test_sigterm_does_not_wait_forever_for_a_stalled_upload(
    server, bucket, mount, timeout, signals
):
    m = mount(bucket, "--unmount-timeout", timeout)
    server.reset()
    server.add_fault(op="PutObject", bucket=bucket, delay=30)  # then 503, long after this test
    target = m.path / "data.txt"
    write = f"with open({str(target)!r}, 'wb') as f: f.write(b'keep me')"
    writer = subprocess.Popen([sys.executable, "-c", write], stderr=subprocess.PIPE)
    deadline = time.monotonic() + FAIL_FAST
    while not any(
        r["op"] == "PutObject" and r["key"] == "data.txt" for r in server.requests()
    ):  # uploading
        assert time.monotonic() < deadline and writer.poll() is None
        time.sleep(0.05)
    for _ in range(signals):
        m.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
    assert m.proc.wait(timeout=FAIL_FAST) == 3  # not after the server's 30 s
    assert not is_mounted(m.path)
    assert writer.wait(timeout=FAIL_FAST) != 0  # its close() failed: nothing pretends it was saved
    assert "requests still in flight" in m.log()
    assert "'data.txt' (7 bytes): its upload was in flight: it may or may not be" in m.log()
    assert [p.read_bytes() for p in m.staged_files()] == [b"keep me"]  # and the data is kept
    server.clear_faults()


def test_missing_bucket_fails_fast_with_a_reason(server, tmp_path):
    (tmp_path / "m").mkdir()
    result = cwfs(server, *mount_args(server, "no-such-bucket-here", tmp_path / "m"))
    assert result.returncode != 0
    assert "does not exist" in result.stderr and "no-such-bucket-here" in result.stderr
    assert not is_mounted(tmp_path / "m")


@pytest.mark.parametrize(
    "key_id, secret, code",
    [
        ("WRONGKEY", "whatever", "InvalidAccessKeyId"),
        (None, "wrong-secret", "SignatureDoesNotMatch"),
    ],
)
def test_wrong_credentials_fail_fast_without_leaking_them(
    server, bucket, tmp_path, key_id, secret, code
):
    (tmp_path / "m").mkdir()
    env = cwfs_env(server, ACCESS_KEY_ID=key_id or server.access_key, SECRET_ACCESS_KEY=secret)
    result = cwfs(server, *mount_args(server, bucket, tmp_path / "m"), env=env)
    assert result.returncode != 0
    assert "credentials were rejected" in result.stderr and code in result.stderr
    log = (tmp_path / "bg.log").read_text()
    for text in (result.stderr, log):
        assert secret not in text
    assert not is_mounted(tmp_path / "m")


def test_no_credentials_at_all(server, bucket, tmp_path):
    (tmp_path / "m").mkdir()
    env = {
        k: v for k, v in cwfs_env(server).items() if k not in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")
    }
    env.update(HOME=str(tmp_path), AWS_EC2_METADATA_DISABLED="true")
    result = cwfs(server, *mount_args(server, bucket, tmp_path / "m"), env=env)
    assert result.returncode != 0
    assert "no credentials found" in result.stderr


def test_unreachable_endpoint_fails_fast(server, bucket, tmp_path):
    (tmp_path / "m").mkdir()
    args = mount_args(server, bucket, tmp_path / "m")
    args[args.index("--endpoint") + 1] = "http://127.0.0.1:9"  # discard port: nothing listens
    result = cwfs(server, *args)
    assert result.returncode != 0
    assert "cannot reach http://127.0.0.1:9" in result.stderr


def test_a_mount_not_ready_in_time_is_stopped(server, bucket, tmp_path):
    """start_mount gives up at its timeout and stops the process it started."""
    (tmp_path / "m").mkdir()
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        args = [bucket, str(tmp_path / "m"), "--endpoint", endpoint, "--addressing-style", "path"]
        with pytest.raises(MountStartError, match="not ready within 1 s"):
            start_mount(args, env=cwfs_env(server), timeout=1)
    assert not is_mounted(tmp_path / "m")


def test_path_style_is_refused_for_coreweave_endpoints(server, tmp_path):
    (tmp_path / "m").mkdir()
    result = cwfs(
        server,
        "mount",
        "b",
        str(tmp_path / "m"),
        "--endpoint",
        "https://cwobject.com",
        "--addressing-style",
        "path",
    )
    assert result.returncode == 2
    assert "virtual-hosted addressing only" in result.stderr


def test_coreweave_profile_files_supply_credentials(server, bucket, s3, tmp_path):
    """~/.coreweave/cw.credentials and cw.config (profile 'cw') are used when present."""
    home = tmp_path / "home"
    (home / ".coreweave").mkdir(parents=True)
    (home / ".coreweave" / "cw.credentials").write_text(
        f"[cw]\naws_access_key_id = {server.access_key}\naws_secret_access_key = {server.secret_key}\n"
    )
    (home / ".coreweave" / "cw.config").write_text(
        f"[profile cw]\nendpoint_url = {server.url}\ns3 =\n    addressing_style = path\n"
    )
    s3.put_object(Bucket=bucket, Key="from-profile.txt", Body=b"cw")
    mnt = tmp_path / "m"
    mnt.mkdir()
    env = {
        k: v for k, v in cwfs_env(server).items() if k not in ("ACCESS_KEY_ID", "SECRET_ACCESS_KEY")
    }
    env["HOME"] = str(home)
    try:
        result = cwfs(
            server, "mount", bucket, str(mnt), "--log-file", str(tmp_path / "cw.log"), env=env
        )
        assert result.returncode == 0, result.stderr
        assert (mnt / "from-profile.txt").read_bytes() == b"cw"
    finally:
        unmount(mnt)
    _wait_unmounted_and_exited(mnt, f"cwfs mount {bucket} ")


def test_options_from_the_environment_are_parsed_as_flags_are(server, bucket, tmp_path):
    """Words in any case, numbers as numbers: the same parser as the flags'."""
    mnt = tmp_path / "m"
    mnt.mkdir()
    env = cwfs_env(server, CWFS_LOG_LEVEL="debug", CWFS_CHECKSUM="CRC32C", CWFS_READ_TIMEOUT="30")
    try:
        result = cwfs(server, *mount_args(server, bucket, mnt), env=env)
        assert result.returncode == 0, result.stderr
        (mnt / "sum.txt").write_bytes(b"checked")
        puts = [r for r in server.requests() if r["op"] == "PutObject" and r["key"] == "sum.txt"]
        assert [r["checksum"]["algorithm"] for r in puts] == ["CRC32C"]
        assert " DEBUG " in (tmp_path / "bg.log").read_text()
    finally:
        unmount(mnt)
    _wait_unmounted_and_exited(mnt, f"cwfs mount {bucket} ")


def test_a_bad_environment_value_stops_the_mount_naming_the_variable(server, bucket, tmp_path):
    (tmp_path / "m").mkdir()
    env = cwfs_env(server, CWFS_RENAME_MODE="bogus")
    result = cwfs(server, *mount_args(server, bucket, tmp_path / "m"), env=env)
    assert result.returncode == 2
    assert "CWFS_RENAME_MODE='bogus': must be one of auto, atomic, copy" in result.stderr
    assert not is_mounted(tmp_path / "m")


@pytest.mark.parametrize("foreground", [False, True], ids=["background", "foreground"])
def test_a_dead_mount_point_is_refused_naming_the_fix(server, bucket, mount, foreground):
    """A mount whose process was killed leaves a mount point whose stat fails with ENOTCONN:
    mounting there again says so, and how to clear it, with the status of a bad option."""
    m = mount(bucket)
    m.proc.kill()
    m.proc.wait(timeout=FAIL_FAST)
    try:
        wait_for(lambda: stat_errno(m.path) == errno.ENOTCONN)  # once the kernel's 1 s TTL ends
        args = mount_args(server, bucket, m.path) + (["--foreground"] if foreground else [])
        result = cwfs(server, *args)
        assert result.returncode == 2, result.stderr
        assert f"mount point {m.path} is a dead FUSE mount" in result.stderr
        assert f"`fusermount3 -u {m.path}`" in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        subprocess.run(["fusermount3", "-u", str(m.path)], check=True)
    assert not is_mounted(m.path)
    assert os.path.isdir(m.path)  # cleared: the next mount can use it
