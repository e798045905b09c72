"""``cwfs demo``: the embedded server with a sample bucket, mounted until Ctrl-C."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from cwfs.server.control import EmbeddedServer

log = logging.getLogger(__name__)

DEMO_BUCKET = "demo"


def _wait_for_interrupt() -> None:
    """Block until SIGINT or SIGTERM, without a traceback."""
    signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    signal.sigwait(signals)


def run_demo() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    mountpoint = Path(tempfile.mkdtemp(prefix="cwfs-demo-"))
    log_file = mountpoint.with_name(mountpoint.name + ".log")
    with EmbeddedServer.start(demo=True) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CWFS_"))}
        env.update(ACCESS_KEY_ID=server.access_key, SECRET_ACCESS_KEY=server.secret_key)
        command = [sys.executable, "-m", "cwfs", "mount", DEMO_BUCKET, str(mountpoint), "--endpoint", server.url,
                   "--addressing-style", "path", "--log-file", str(log_file)]  # fmt: skip
        if subprocess.run(command, env=env).returncode != 0:
            mountpoint.rmdir()
            return 1
        try:
            log.info("Bucket %r from the embedded S3 server at %s is mounted on\n\n    %s\n", DEMO_BUCKET, server.url, mountpoint)
            log.info("Try: ls -l %s; find %s; cat %s/README.txt", mountpoint, mountpoint, mountpoint)
            log.info("Log: %s. Press Ctrl-C to unmount and stop.", log_file)
            _wait_for_interrupt()
        finally:
            subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
            log.info("unmounted %s", mountpoint)
    mountpoint.rmdir()
    return 0
