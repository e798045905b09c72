#!/usr/bin/env python3
"""Soak: writers and readers on a cwfs mount while the store fails at a given rate.

Starts the embedded S3 server and a mount of a fresh bucket, switches on faults (503
SlowDown, 500 InternalError, responses lost after the request took effect, bodies cut
midway) on a fraction of every operation the mount sends, and runs N writer and M reader
threads for T minutes. Writers rewrite files of random sizes (some above the part size,
so multipart uploads run too) in a bounded set of names, with bytes derived from a seed;
readers read closed files back and check them. At the end it unmounts and checks every
object in the bucket against what was written, then prints the counts (docs/benchmarks.md).

    .venv/bin/python scripts/soak.py --minutes 10 --fault-rate 0.1 --writers 16 --readers 4

Exit status 1 if anything was lost, corrupt or failed with EIO.
"""

from __future__ import annotations

import argparse
import errno
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cwfs.launch import start_mount
from cwfs.server.control import EmbeddedServer

KiB, MiB = 1 << 10, 1 << 20
BUCKET = "soak"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=2.0, help="how long writers and readers run")
    p.add_argument("--fault-rate", type=float, default=0.1, help="share of requests that fail")
    p.add_argument("--writers", type=int, default=16)
    p.add_argument("--readers", type=int, default=4)
    p.add_argument("--files-per-writer", type=int, default=3, help="names each writer rewrites")
    p.add_argument("--part-size", default="5M", help="the mount's --part-size (multipart above)")
    p.add_argument("--large-size", type=int, default=12 * MiB, help="the largest file written")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--workdir", type=Path, default=None, help="default: a new temp directory")
    p.add_argument(
        "--mount-arg", action="append", default=[], help="extra option for cwfs mount (repeat)"
    )
    return p.parse_args(argv)


def content(seed: int, size: int) -> bytes:
    """The bytes of one version of a file: derived from its seed, so checkable later."""
    return random.Random(seed).randbytes(size)


@dataclass
class Slot:
    """One file name: its last version closed without error, and versions whose close
    failed since (the bucket may hold any of them: an upload's fate after an error is
    unknown to the writer)."""

    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    committed: tuple[int, int] | None = None  # (seed, size)
    uncertain: list[tuple[int, int]] = field(default_factory=list)

    def acceptable(self) -> list[tuple[int, int]]:
        return ([self.committed] if self.committed else []) + self.uncertain


@dataclass
class Tally:
    """What the threads saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    counts: Counter[str] = field(default_factory=Counter)
    errnos: Counter[str] = field(default_factory=Counter)
    worst: dict[str, float] = field(default_factory=lambda: {"write": 0.0, "read": 0.0})
    problems: list[str] = field(default_factory=list)

    def add(self, what: str, n: int = 1) -> None:
        with self.lock:
            self.counts[what] += n

    def failed(self, where: str, exc: OSError, name: str) -> None:
        code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        with self.lock:
            self.errnos[f"{where} {code}"] += 1
            if len(self.problems) < 20:
                self.problems.append(f"{where} {name}: {exc}")

    def latency(self, kind: str, seconds: float) -> None:
        with self.lock:
            self.worst[kind] = max(self.worst[kind], seconds)


def pick_size(rng: random.Random, large: int) -> int:
    """Mostly small files, some of a few MiB, one in ten above the part size."""
    roll = rng.random()
    if roll < 0.6:
        return rng.randrange(0, 256 * KiB)
    if roll < 0.9:
        return rng.randrange(256 * KiB, 4 * MiB)
    return rng.randrange(large // 2, large + 1)


class Soak:
    """The threads' shared state: the mount point, the names, the tally and the clock."""

    def __init__(self, args: argparse.Namespace, mnt: Path) -> None:
        self.args, self.mnt = args, mnt
        self.slots = [
            Slot(f"w{w:02d}/f{i}")
            for w in range(args.writers)
            for i in range(args.files_per_writer)
        ]
        self.tally = Tally()
        self.deadline = time.monotonic() + args.minutes * 60

    def writer(self, number: int) -> None:
        """Rewrite this writer's names, each with a new seed, until the deadline."""
        rng = random.Random(self.args.seed * 1000 + number)
        mine = [s for s in self.slots if s.name.startswith(f"w{number:02d}/")]
        (self.mnt / f"w{number:02d}").mkdir(exist_ok=True)
        while time.monotonic() < self.deadline:
            slot = rng.choice(mine)
            version = (rng.getrandbits(48), pick_size(rng, self.args.large_size))
            with slot.lock:
                self.write_one(slot, version)

    def write_one(self, slot: Slot, version: tuple[int, int]) -> None:
        data = content(*version)
        start = time.monotonic()
        try:
            with open(self.mnt / slot.name, "wb") as f:
                for offset in range(0, len(data), MiB):
                    f.write(data[offset : offset + MiB])
        except OSError as exc:
            self.tally.failed("write", exc, slot.name)
            slot.uncertain.append(version)
            return
        self.tally.latency("write", time.monotonic() - start)
        self.tally.add("writes")
        self.tally.add("bytes written", len(data))
        slot.committed, slot.uncertain = version, []

    def reader(self, number: int) -> None:
        """Read back names whose last write closed, while no writer holds them."""
        rng = random.Random(self.args.seed * 1000 + 500 + number)
        while time.monotonic() < self.deadline:
            slot = rng.choice(self.slots)
            if slot.committed is None or not slot.lock.acquire(timeout=0.05):
                time.sleep(0.01)
                continue
            try:
                self.read_one(slot)
            finally:
                slot.lock.release()

    def read_one(self, slot: Slot) -> None:
        start = time.monotonic()
        try:
            with open(self.mnt / slot.name, "rb") as f:
                # From the store, not the page cache the writer filled.
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                got = f.read()
        except OSError as exc:
            self.tally.failed("read", exc, slot.name)
            return
        self.tally.latency("read", time.monotonic() - start)
        self.tally.add("reads")
        if not any(got == content(*v) for v in slot.acceptable()):
            self.tally.add("corrupt reads")
            with self.tally.lock:
                self.tally.problems.append(f"read {slot.name}: {len(got)} bytes, not as written")

    def run(self) -> None:
        threads = [
            threading.Thread(target=self.writer, args=(n,), name=f"writer{n}")
            for n in range(self.args.writers)
        ]
        threads += [
            threading.Thread(target=self.reader, args=(n,), name=f"reader{n}")
            for n in range(self.args.readers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def fault_rules(rate: float, seed: int) -> list[dict[str, Any]]:
    """The mix: throttling, server errors, lost responses, and bodies cut midway (on the
    operations that answer with a body), each a share of ``rate`` of the requests."""
    base = {"bucket": BUCKET, "endpoint": "primary", "times": -1, "seed": seed}
    mix: list[dict[str, Any]] = [
        {"status": 503, "code": "SlowDown", "rate": rate * 0.4},
        {"status": 500, "code": "InternalError", "message": "soak", "rate": rate * 0.2},
        {
            "status": 500,
            "code": "InternalError",
            "message": "soak: response lost",
            "phase": "after",
            "rate": rate * 0.2,
        },
    ]
    for op, cut_at in (("GetObject", 64 * KiB), ("ListObjectsV2", 200)):
        mix.append({"op": op, "phase": "cut", "cut_at": cut_at, "rate": rate * 0.2})
    for op in ("CreateMultipartUpload", "CompleteMultipartUpload"):
        mix.append({"op": op, "phase": "cut", "cut_at": 50, "rate": rate * 0.2})
    return [{**base, **rule, "seed": seed + i} for i, rule in enumerate(mix)]


def mount_bucket(server: EmbeddedServer, args: argparse.Namespace, work: Path) -> Any:
    """Mount the bucket (as the tests do, by `cwfs.launch`); returns the process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CWFS_", "ACCESS_KEY", "SECRET_ACCESS"))
    }
    env.update(ACCESS_KEY_ID=server.access_key, SECRET_ACCESS_KEY=server.secret_key)
    (work / "mnt").mkdir()
    options = ["--endpoint", server.url, "--addressing-style", "path", "--lota", "off"]
    options += ["--cache-dir", str(work / "cache"), "--attribute-store", "off"]
    options += ["--part-size", args.part_size, *args.mount_arg]
    return start_mount(
        [BUCKET, str(work / "mnt"), *options], log_file=work / "cwfs.log", env=env, timeout=60
    )


def unmount(mnt: Path, process: Any) -> int:
    """Unmount and wait for the mount process; its exit status."""
    for flags in (["-u"], ["-uz"]):
        if subprocess.run(["fusermount3", *flags, str(mnt)], capture_output=True).returncode == 0:
            break
        time.sleep(2)
    try:
        return int(process.wait(timeout=120))
    except subprocess.TimeoutExpired:
        process.kill()
        return int(process.wait())


def check_bucket(server: EmbeddedServer, soak: Soak) -> Counter[str]:
    """Every name against the bucket: lost (a committed version missing), corrupt (bytes
    of no version written), or fine; objects nobody wrote are counted too."""
    s3 = server.client()
    found: Counter[str] = Counter()
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        keys |= {o["Key"] for o in page.get("Contents", [])}
    for slot in soak.slots:
        if slot.name not in keys:
            found["lost" if slot.committed else "never written"] += 1
            continue
        body = s3.get_object(Bucket=BUCKET, Key=slot.name)["Body"].read()
        if not any(body == content(*v) for v in slot.acceptable()):
            found["corrupt"] += 1
        elif slot.committed is None or body != content(*slot.committed):
            found["a failed close's version"] += 1
        else:
            found["verified"] += 1
    names = {s.name for s in soak.slots} | {f"w{w:02d}/" for w in range(soak.args.writers)}
    found["unexpected objects"] = len(keys - names)
    return found


def report(soak: Soak, fired: dict[str, int], requests: int, found: Counter[str], kept: int) -> int:
    """Print the summary; the exit status (1 if anything was lost, corrupt or EIO)."""
    t = soak.tally
    eio = sum(n for what, n in t.errnos.items() if what.endswith(" EIO"))
    lost, corrupt = found["lost"], found["corrupt"] + t.counts["corrupt reads"]
    print(f"writes:          {t.counts['writes']} ({t.counts['bytes written'] / MiB:.0f} MiB)")
    print(f"reads:           {t.counts['reads']}")
    print(f"requests:        {requests}")
    kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(fired.items()))
    print(f"faults injected: {sum(fired.values())} ({kinds})")
    print(f"lost:            {lost}")
    print(f"corrupt:         {corrupt} ({t.counts['corrupt reads']} on reads)")
    print(f"EIO:             {eio}")
    others = {what: n for what, n in sorted(t.errnos.items()) if not what.endswith(" EIO")}
    print(f"other errors:    {others or 'none'}")
    print(f"kept:            {kept} files left in the cache directory")
    print(f"bucket:          {dict(sorted(found.items()))}")
    print(f"worst open/write/close: {t.worst['write']:.2f} s; worst read: {t.worst['read']:.2f} s")
    for line in t.problems[:10]:
        print(f"  {line}")
    return 1 if lost or corrupt or eio else 0


def fired_by_kind(rules: list[dict[str, Any]]) -> dict[str, int]:
    kinds: Counter[str] = Counter()
    for rule in rules:
        phase = rule["phase"]
        kind = f"cut {rule['op']}" if phase == "cut" else f"{rule['status']} {rule['code']}"
        kinds[kind + (" (lost response)" if phase == "after" else "")] += rule["fired"]
    return dict(kinds)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cwfs-soak-"))
    work.mkdir(parents=True, exist_ok=True)
    with EmbeddedServer.start(buckets=[BUCKET]) as server:
        process = mount_bucket(server, args, work)
        soak = Soak(args, work / "mnt")
        server.reset()
        for rule in fault_rules(args.fault_rate, args.seed):
            server.add_fault(**rule)
        what = f"{args.writers} writers, {args.readers} readers, {args.minutes} min"
        print(f"soak: {what}, fault rate {args.fault_rate}, log {work / 'cwfs.log'}", flush=True)
        try:
            soak.run()
        finally:
            fired = fired_by_kind(server.faults())
            requests = sum(server.counts().values())
            server.clear_faults()
            status = unmount(work / "mnt", process)
        cache = work / "cache"
        kept = sum(1 for p in cache.rglob("*") if p.is_file()) if cache.exists() else 0
        found = check_bucket(server, soak)
    print(f"mount exit status: {status}")
    result = report(soak, fired, requests, found, kept)
    if result == 0 and kept == 0 and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"left for inspection: {work}")
    return result


if __name__ == "__main__":
    sys.exit(main())
