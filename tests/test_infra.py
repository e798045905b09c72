"""Issue 15 through real mounts: ``mount -t fuse.cwfs`` and fstab lines through
mount(8) and mount.fuse3, and systemd's readiness notifications."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cwfs_env, is_mounted, unmount

from cwfs.mounthelper import MountOptionError, mount_arguments

NOTIFY_WAIT = 60.0  # seconds for a mount to become ready and notify


class NotifySocket:
    """A stand-in for systemd's notification socket."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(NOTIFY_WAIT)

    def receive(self) -> dict[str, str]:
        """The next notification, as its fields."""
        lines = self.sock.recv(4096).decode().splitlines()
        return dict(line.partition("=")[::2] for line in lines)

    def until(self, field: str) -> dict[str, str]:
        """Notifications up to the first with ``field``."""
        while field not in (message := self.receive()):
            pass
        return message


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    listener = NotifySocket(tmp_path / "notify.sock")
    yield listener
    listener.sock.close()


MOUNT_BIN = Path("/usr/local/bin")  # on the PATH mount(8) gives its helpers, whatever ours is


@pytest.fixture
def installed_command() -> Iterator[Path]:
    """``cwfs`` where mount.fuse3 finds it, running this checkout (as `make install`
    links it); whatever was there before is put back afterwards."""
    entry = MOUNT_BIN / "cwfs"
    saved = MOUNT_BIN / f".cwfs-saved-{os.getpid()}"
    if entry.exists() or entry.is_symlink():
        os.replace(entry, saved)
    entry.write_text(f'#!/bin/sh\nexec {sys.executable} -m cwfs "$@"\n')
    entry.chmod(0o755)
    try:
        yield entry
    finally:
        entry.unlink()
        if saved.exists() or saved.is_symlink():
            os.replace(saved, entry)


def stop_pid(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass


def test_mount_options_become_cwfs_mount_arguments():
    argv = ["b", "/m", "-o", "ro,endpoint=http://h:1,metadata-ttl=5,allow_other,noatime"]
    argv += ["-o", "dev,suid,_netdev,nofail,x-systemd.automount,rw,max_read=65536"]
    assert mount_arguments(argv) == [
        "mount", "b", "/m", "--read-only", "--endpoint", "http://h:1", "--metadata-ttl", "5",
        "--allow-other", "--fuse-options", "noatime,dev,suid,max_read=65536",
    ]  # fmt: skip
    for bad, says in [
        ("endpont=http://h", "unknown mount option 'endpont=http://h'"),
        ("read_only=1", "'read_only' takes no value"),
        ("endpoint", "'endpoint' needs a value"),
        ("fsname=x", "unknown mount option 'fsname=x'"),
    ]:
        with pytest.raises(MountOptionError, match=says):
            mount_arguments(["b", "/m", "-o", bad])
    with pytest.raises(MountOptionError, match="unexpected argument"):
        mount_arguments(["b", "/m", "--endpoint", "x"])


def helper_options(server, tmp_path: Path, extra: str = "") -> str:
    return (
        f"endpoint={server.url},addressing_style=path,cache_dir={tmp_path / 'cache'},"
        f"attribute_store={tmp_path / 'attrs.sqlite'},log_file={tmp_path / 'cwfs.log'}{extra}"
    )


def mounted_options(path: Path) -> tuple[str, list[str]]:
    """The file system type and options the mount table shows for ``path``."""
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == str(path):
            return fields[2], fields[3].split(",")
    raise AssertionError(f"{path} is not in /proc/mounts")


def test_mount_t_fuse_cwfs_mounts_through_mount_fuse3_and_umount_stops_it(
    server, bucket, tmp_path, installed_command, notify_socket
):
    """mount(8) runs mount.fuse3, which runs ``cwfs BUCKET DIR -o ...``: the options
    reach cwfs (read-only, the endpoint) and FUSE (noatime); mount returns once the
    mount answers, and umount ends the mount process."""
    server.seed(bucket, [{"key": "hello.txt", "text": "hello\n"}])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = cwfs_env(server, NOTIFY_SOCKET=str(notify_socket.path))
    options = helper_options(server, tmp_path, ",ro,noatime,_netdev,nofail")
    done = subprocess.run(
        ["mount", "-t", "fuse.cwfs", bucket, str(mnt), "-o", options],
        env=env, capture_output=True, text=True, timeout=NOTIFY_WAIT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pid = int(notify_socket.until("READY").get("MAINPID", "0"))
    try:
        assert (mnt / "hello.txt").read_text() == "hello\n"
        kind, flags = mounted_options(mnt)
        assert kind == "fuse.cwfs" and "ro" in flags and "noatime" in flags
        with pytest.raises(OSError):
            (mnt / "new.txt").write_text("x")
        assert subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0
        assert "STOPPING" in notify_socket.until("STOPPING")
        assert not is_mounted(mnt)
    finally:
        unmount(mnt)
        stop_pid(pid)


def test_an_fstab_line_mounts_with_mount_T(
    server, bucket, s3, tmp_path, installed_command, notify_socket
):
    """``BUCKET DIR fuse.cwfs OPTIONS 0 0`` in a (temporary) fstab: ``mount DIR``."""
    server.seed(bucket, [{"key": "a/b.txt", "text": "b"}])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    options = helper_options(server, tmp_path, ",_netdev,nofail,x-systemd.requires=network.target")
    fstab.write_text(f"# a test fstab\n{bucket} {mnt} fuse.cwfs {options} 0 0\n")
    env = cwfs_env(server, NOTIFY_SOCKET=str(notify_socket.path))
    done = subprocess.run(
        ["mount", "-T", str(fstab), str(mnt)],
        env=env, capture_output=True, text=True, timeout=NOTIFY_WAIT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    pid = int(notify_socket.until("READY").get("MAINPID", "0"))
    try:
        assert os.listdir(mnt / "a") == ["b.txt"]
        (mnt / "a" / "c.txt").write_text("c")
        assert mounted_options(mnt)[0] == "fuse.cwfs"
    finally:
        unmount(mnt)
        stop_pid(pid)
    body = s3.get_object(Bucket=bucket, Key="a/c.txt")["Body"].read()
    assert body == b"c"


def test_a_bad_mount_option_is_a_clear_error_and_mounts_nothing(
    server, bucket, tmp_path, installed_command
):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = cwfs_env(server)
    done = subprocess.run(
        ["mount", "-t", "fuse.cwfs", bucket, str(mnt), "-o", f"endpont={server.url}"],
        env=env, capture_output=True, text=True, timeout=NOTIFY_WAIT,
    )  # fmt: skip
    assert done.returncode != 0
    assert f"cwfs: unknown mount option 'endpont={server.url}'" in done.stderr
    assert not is_mounted(mnt)


def test_systemd_hears_ready_once_the_mount_answers_and_stopping_at_sigterm(
    server, bucket, tmp_path, notify_socket
):
    """``Type=notify``: READY=1 comes from the mount process itself, when the mount
    already answers, with a STATUS line; SIGTERM (systemctl stop) brings STOPPING=1."""
    server.seed(bucket, [{"key": "x.txt", "text": "x"}])
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    command = [sys.executable, "-m", "cwfs", "mount", bucket, str(mnt), "--foreground"]
    command += ["--endpoint", server.url, "--addressing-style", "path"]
    command += ["--cache-dir", str(tmp_path / "cache"), "--attribute-store", "off"]
    env = cwfs_env(server, NOTIFY_SOCKET=str(notify_socket.path))
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    try:
        ready = notify_socket.until("READY")
        mounted = is_mounted(mnt)  # at the moment READY=1 arrived
        answered = os.listdir(mnt)
        assert ready["READY"] == "1" and int(ready["MAINPID"]) == proc.pid
        assert mounted and answered == ["x.txt"]
        assert ready["STATUS"] == (f"mounted bucket {bucket} from {server.url} on {mnt}, LOTA off")
        proc.send_signal(signal.SIGTERM)
        stopping = notify_socket.until("STOPPING")
        assert stopping["STOPPING"] == "1" and "SIGTERM" in stopping["STATUS"]
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
        unmount(mnt)


UNIT = Path(__file__).resolve().parent.parent / "docs" / "systemd" / "cwfs@.service"


def unit_settings() -> dict[str, str]:
    settings = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            settings[key] = value
    return settings


def test_the_systemd_unit_waits_longer_than_the_mount_and_uses_real_options(tmp_path):
    """docs/systemd/cwfs@.service: Type=notify, a foreground mount whose options all
    exist, an ExecStop that waits, a stop timeout above --unmount-timeout, and no
    restart over bad configuration or kept data. systemd-analyze checks its syntax."""
    from cwfs.cli import build_parser

    unit = unit_settings()
    assert unit["Type"] == "notify"
    command = unit["ExecStart"].split()
    assert command[0] == "/usr/local/bin/cwfs" and "--foreground" in command
    args = build_parser().parse_args(command[1:])  # exits on an unknown option
    assert float(unit["TimeoutStopSec"]) > float(args.unmount_timeout)
    assert "kill -TERM" in unit["ExecStop"] and "while kill -0" in unit["ExecStop"]
    assert set(unit["RestartPreventExitStatus"].split()) == {"2", "3", "4"}
    analyze = shutil.which("systemd-analyze")
    if analyze is not None:  # the syntax, with the command where this checkout has it
        copy = tmp_path / "cwfs@test.service"
        copy.write_text(UNIT.read_text().replace("/usr/local/bin/cwfs", sys.executable))
        done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True)
        assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_make_install_links_the_command_where_mount_finds_it(tmp_path):
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        ["make", "-s", "install", f"BINDIR={tmp_path}", "SUDO="],
        cwd=root, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    linked = tmp_path / "cwfs"
    assert linked.resolve() == (root / ".venv" / "bin" / "cwfs").resolve()
    usage = subprocess.run([str(linked), "mount", "--help"], capture_output=True, text=True)
    assert "--fuse-options" in usage.stdout
