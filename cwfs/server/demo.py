"""``cwfs demo``: the embedded server with a sample bucket, mounted until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
from pathlib import Path

from cwfs.launch import MountStartError, start_mount, stop
from cwfs.server.control import EmbeddedServer

log = logging.getLogger(__name__)

DEMO_BUCKET = "demo"
UNMOUNT_TIMEOUT = 30.0  # seconds for the mount process to exit once unmounted


def _wait_for_interrupt() -> None:
    """Block until SIGINT or SIGTERM, without a traceback."""
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    signal.sigwait(signals)


def _unmount(mountpoint: Path, process: subprocess.Popen[bytes]) -> None:
    """Unmount; the mount process then exits once the uploads in flight are done."""
    subprocess.run(["fusermount3", "-u", str(mountpoint)], capture_output=True, check=False)
    try:
        process.wait(UNMOUNT_TIMEOUT)
    except subprocess.TimeoutExpired:
        stop(process)
    log.info("unmounted %s", mountpoint)


def run_demo() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mountpoint = Path(tempfile.mkdtemp(prefix="cwfs-demo-"))
    log_file = mountpoint.with_name(mountpoint.name + ".log")
    with EmbeddedServer.start(demo=True) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CWFS_"))}
        env.update(ACCESS_KEY_ID=server.access_key, SECRET_ACCESS_KEY=server.secret_key)
        args = [DEMO_BUCKET, str(mountpoint), "--endpoint", server.url]
        args += ["--addressing-style", "path"]
        try:
            process = start_mount(args, log_file=log_file, env=env)
        except MountStartError as exc:
            log.error("cwfs: %s", exc)
            mountpoint.rmdir()
            return 1
        try:
            log.info(
                "Bucket %r from the embedded S3 server at %s is mounted on\n\n    %s\n",
                DEMO_BUCKET,
                server.url,
                mountpoint,
            )
            log.info(
                "Try: ls -l %s; find %s; cat %s/README.txt", mountpoint, mountpoint, mountpoint
            )
            log.info("Log: %s. Press Ctrl-C to unmount and stop.", log_file)
            _wait_for_interrupt()
        finally:
            _unmount(mountpoint, process)
    mountpoint.rmdir()
    return 0
