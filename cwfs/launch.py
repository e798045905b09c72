"""Starting ``cwfs mount --foreground`` in a child process and waiting until it is ready.

The child writes one line to the ``--ready-fd`` pipe once the mount answers (after the
kernel's FUSE handshake, with read-ahead tuned), or the reason it cannot mount. `cwfs
mount` in the background, the tests, the benchmark and the demo all start mounts
this way, so none of them polls the mount table or a log line.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

READY = "ready"  # what the child writes to --ready-fd once mounted; anything else is an error
MOUNT_TIMEOUT = 120.0  # seconds for a mount to become ready (checking the bucket included)
STOP_GRACE = 10.0  # seconds a child that failed to mount gets to exit after SIGTERM


class MountStartError(RuntimeError):
    """The mount process reported an error, exited, or was not ready in time."""


def start_mount(
    args: Sequence[str],
    *,
    log_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = MOUNT_TIMEOUT,
    detach: bool = False,
    prelude: str | None = None,
) -> subprocess.Popen[bytes]:
    """Run ``cwfs mount ARGS --foreground`` and return its process once the mount is ready.

    ``args`` are the bucket, the mount point and options; the child logs to
    ``log_file`` (else to stderr). ``detach`` starts it in a new session with no
    terminal, to outlive the caller. ``prelude`` is Python code the child runs before
    cwfs starts (the tests inject faults with it). On failure the child is stopped (by
    its PID) and MountStartError says why.
    """
    read_fd, write_fd = os.pipe()
    entry = ["-m", "cwfs"]
    if prelude is not None:
        entry = ["-c", f"{prelude}\nimport sys, cwfs.cli\nsys.exit(cwfs.cli.main(sys.argv[1:]))"]
    command = [sys.executable, *entry, "mount", *args, "--foreground"]
    command += ["--ready-fd", str(write_fd)] + (["--log-file", str(log_file)] if log_file else [])
    output = subprocess.DEVNULL if detach else None
    try:
        process = subprocess.Popen(
            command, env=env, pass_fds=(write_fd,), stdin=subprocess.DEVNULL, stdout=output,
            stderr=output, start_new_session=detach,
        )  # fmt: skip
    finally:
        os.close(write_fd)
    try:
        message = _first_line(read_fd, time.monotonic() + timeout)
    finally:
        os.close(read_fd)
    if message == READY:
        return process
    stop(process)
    see = f"; see {log_file}" if log_file else ""
    if message is None:
        message = f"the mount was not ready within {timeout:.0f} s{see}"
    elif not message:
        message = f"the mount process exited with status {process.returncode}{see}"
    raise MountStartError(message)


def _first_line(fd: int, deadline: float) -> str | None:
    """The first line written to ``fd``: "" if it is closed first, None at the deadline."""
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return None
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").partition("\n")[0].strip()


def stop(process: subprocess.Popen[bytes], grace: float = STOP_GRACE) -> None:
    """SIGTERM (a mounted child unmounts), then SIGKILL if it lingers past ``grace`` seconds."""
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        log.warning("the mount process %d did not exit on SIGTERM: killing it", process.pid)
        process.kill()
        process.wait()
