"""Where `ls -l --exact-metadata` spends its time: requests and the mount's CPU seconds.

    .venv/bin/python scripts/exact_metadata_probe.py [--server rclone] 2000 [mount options...]

Seeds N objects (no user metadata, as another machine would write them) into the
embedded server or `rclone serve s3`, mounts them with the options given, runs `ls -l`
cold and warm, and prints the wall time, the server's request counts (on `rclone serve
s3`, its counting proxy's) and the mount process's CPU seconds (user + system, from
/proc) for each. A diagnostic beside scripts/bench.py, which compares tools; this looks
inside one.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import BUCKET, SERVERS  # noqa: E402

from cwfs.launch import start_mount  # noqa: E402


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(server_kind: str, count: int, options: list[str]) -> None:
    server = SERVERS[server_kind]([(f"d/f{i:06d}", 10) for i in range(count)])
    work = Path(tempfile.mkdtemp(prefix="cwfs-probe-"))
    mountpoint = work / "mnt"
    mountpoint.mkdir()
    env = dict(os.environ, ACCESS_KEY_ID=server.access_key, SECRET_ACCESS_KEY=server.secret_key)
    url, _ = server.endpoint(True)  # on rclone serve s3, its counting proxy
    argv = [BUCKET, str(mountpoint), "--endpoint", url, "--addressing-style", "path"]
    argv += ["--attribute-store", str(work / "attributes.sqlite"), *options]
    process = start_mount(argv, log_file=work / "mount.log", env=env)
    print(f"mount log: {work / 'mount.log'}")
    try:
        for run in ("cold", "warm"):
            server.reset()
            started, cpu = time.perf_counter(), cpu_seconds(process.pid)
            listing = subprocess.run(
                ["ls", "-l", str(mountpoint / "d")], capture_output=True, text=True, check=True
            )
            wall = time.perf_counter() - started
            cpu = cpu_seconds(process.pid) - cpu
            lines = len(listing.stdout.splitlines()) - 1
            counts = server.counts()
            print(f"{run}: {wall:.2f} s, {lines} entries, mount CPU {cpu:.2f} s, {counts}")
    finally:
        subprocess.run(["fusermount3", "-u", str(mountpoint)], check=False)
        process.wait(30)
        server.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--server", choices=sorted(SERVERS), default="embedded")
    parser.add_argument("count", type=int)
    args, options = parser.parse_known_args()
    main(args.server, args.count, options)
