"""Fixtures: one embedded S3 server per session, and real cwfs mounts on temp dirs.

Every mount runs ``python -m cwfs mount ... --foreground`` in its own process, started
by `cwfs.launch` (which waits until it is ready); the fixture unmounts it and stops the
process by PID, whatever the test did.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cwfs.cli import build_parser
from cwfs.config import StoreSettings, build_config
from cwfs.kept import RECORD_SUFFIX
from cwfs.launch import MountStartError, start_mount
from cwfs.mountrecords import current_cwfs_mountpoints
from cwfs.server.control import EmbeddedServer

MOUNT_TIMEOUT = 30.0
UNMOUNT_EXIT_TIMEOUT = 5.0
_bucket_numbers = itertools.count()


def is_mounted(path: Path) -> bool:
    """Whether a cwfs mount (alive or not) is on ``path``, as the mount table shows it."""
    return str(path) in current_cwfs_mountpoints()


def unmount(path: Path) -> None:
    if is_mounted(path):
        if subprocess.run(["fusermount3", "-u", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(path)], capture_output=True)


class Mount:
    """One running cwfs process with its mount point and log."""

    def __init__(
        self, path: Path, proc: subprocess.Popen[bytes], log_file: Path, cache_dir: Path
    ) -> None:
        self.path = path
        self.proc = proc
        self.log_file = log_file
        self.cache_dir = cache_dir

    def staged_files(self) -> list[Path]:
        """The data in the cache directory (not the records beside it, nor locks)."""
        return sorted(
            p
            for p in self.cache_dir.iterdir()
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(RECORD_SUFFIX)
        )

    def wait_until_nothing_staged(self, timeout: float = 10.0) -> None:
        """Staged files go when the kernel releases the file, a moment after close() returns."""
        deadline = time.monotonic() + timeout
        while self.staged_files():
            assert time.monotonic() < deadline, f"still staged: {self.staged_files()}"
            time.sleep(0.02)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def stop(self) -> None:
        unmount(self.path)
        try:
            # Unmounted, it exits by itself; a signal now could cut its exit short
            # (and the coverage data it is saving).
            self.proc.wait(timeout=UNMOUNT_EXIT_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            pass
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def stat_errno(path: Path) -> int:
    """The errno ``stat`` of ``path`` fails with, 0 if it does not."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno or 0
    return 0


WRITE_SUSPENDED = "The account is write suspended."


def suspend_writes(server: EmbeddedServer, **where: str) -> None:
    """Refuse every PutObject (``where``: bucket, key_prefix) as CoreWeave refuses an
    account over its quota, until ``server.clear_faults()``."""
    server.add_fault(
        op="PutObject", status=403, code="AccessDenied", message=WRITE_SUSPENDED, times=-1, **where
    )


def memory_kib(pid: int, field: str) -> int:
    """A process's memory figure (VmRSS, VmHWM...) from /proc, in KiB."""
    with open(f"/proc/{pid}/status") as status:
        return int(next(line.split()[1] for line in status if line.startswith(field + ":")))


def cwfs_env(server: EmbeddedServer, **extra: str) -> dict[str, str]:
    """An environment whose only credentials are the embedded server's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CWFS_", "ACCESS_KEY", "SECRET_ACCESS"))
    }
    env.update(ACCESS_KEY_ID=server.access_key, SECRET_ACCESS_KEY=server.secret_key)
    env.update(extra)
    return env


@pytest.fixture(scope="session")
def server() -> Iterator[EmbeddedServer]:
    srv = EmbeddedServer.start(lota=True)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def bucket(server: EmbeddedServer) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{os.getpid()}-{next(_bucket_numbers)}"
    server.client().create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(server: EmbeddedServer):
    return server.client()


@pytest.fixture
def store_settings(
    server: EmbeddedServer, bucket: str, tmp_path: Path, monkeypatch
) -> StoreSettings:
    """`StoreSettings` for ``bucket`` on the embedded server, for tests of the store alone."""
    monkeypatch.setenv("ACCESS_KEY_ID", server.access_key)
    monkeypatch.setenv("SECRET_ACCESS_KEY", server.secret_key)
    argv = ["mount", bucket, str(tmp_path), "--endpoint", server.url]
    argv += ["--addressing-style", "path"]
    return build_config(build_parser().parse_args(argv), environ={}, home=tmp_path).store_settings


@pytest.fixture
def mount(server: EmbeddedServer, tmp_path: Path) -> Iterator:
    """``mount(bucket, *args, env=None, name=None, patch=None, private_cache=False)``
    mounts (on ``name`` in a temporary directory) and returns a `Mount`; all are stopped
    after. ``patch`` is Python code run in the mount process before cwfs starts (to
    inject a fault). With ``private_cache``, the mount makes its own cache directory under
    ``$XDG_CACHE_HOME/cwfs`` (give ``env`` one), as it does without ``--cache-dir``."""
    mounts: list[Mount] = []

    def start(
        bucket: str,
        *args: str,
        env: dict[str, str] | None = None,
        name: str | None = None,
        patch: str | None = None,
        private_cache: bool = False,
    ) -> Mount:
        path = tmp_path / (name or f"mnt{len(mounts)}")
        path.mkdir()
        log_file = tmp_path / f"cwfs{len(mounts)}.log"
        cache_dir = tmp_path / f"cache{len(mounts)}"
        options = ["--endpoint", server.url, "--addressing-style", "path"]
        options += [] if private_cache else ["--cache-dir", str(cache_dir)]
        options += ["--log-level", "DEBUG"]
        # The machine's attribute file, as mounts of one test share it (never the user's).
        options += ["--attribute-store", str(tmp_path / "attributes.sqlite"), *args]
        env = env or cwfs_env(server)
        if private_cache:
            cache_dir = Path(env["XDG_CACHE_HOME"]) / "cwfs"
        try:
            proc = start_mount(
                [bucket, str(path), *options],
                log_file=log_file,
                env=env,
                prelude=patch,
                timeout=MOUNT_TIMEOUT,
            )
        except MountStartError as exc:
            unmount(path)  # in case it mounted but was not ready in time
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            raise AssertionError(f"cwfs did not mount: {exc}\n{log}") from None
        mounts.append(Mount(path, proc, log_file, cache_dir))
        return mounts[-1]

    yield start
    for mounted in mounts:
        mounted.stop()
