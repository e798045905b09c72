"""``cwfs warm``: pre-stage objects into the LOTA cache before a job reads them.

CoreWeave's LOTA pulls a whole object into its node-local cache when it receives a
HeadObject with ``Range: bytes=0-0``, without sending the body back. Warming a
dataset before the first epoch makes that epoch read from the cache. LOTA only
caches objects of 4 MB or more, so smaller ones are skipped.

Targets are paths on a cwfs mount (its record, `cwfs.mounts`, tells which bucket,
key and endpoints they are) or ``s3://bucket/prefix`` URLs.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from cwfs import mounts
from cwfs.config import LOTA_ENDPOINT, Config, build_config
from cwfs.errors import StoreError
from cwfs.store import ObjectInfo, ObjectStore
from cwfs.tasks import gather

log = logging.getLogger(__name__)

LOTA_MIN_SIZE = 4_000_000  # LOTA caches objects of 4 MB or more


@dataclass
class Target:
    bucket: str
    prefix: str  # a key, or a prefix ending in "/" (or "" for the whole bucket)
    settings: dict[str, str]


@dataclass
class Summary:
    warmed: int = 0
    warmed_bytes: int = 0
    skipped: int = 0
    errors: int = 0


def add_warm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("targets", nargs="+", help="paths on a cwfs mount, or s3://bucket/prefix")
    parser.add_argument("--endpoint", help="S3 endpoint for s3:// targets (default: the mount's, or https://cwobject.com)")
    parser.add_argument("--lota-endpoint", help=f"LOTA endpoint (default: the mount's, or {LOTA_ENDPOINT})")
    parser.add_argument("--profile", help="credentials profile (as for cwfs mount)")
    parser.add_argument("--region")
    parser.add_argument("--addressing-style", choices=("virtual", "path"))
    parser.add_argument("--concurrency", type=int, default=32, help="prestage requests in flight (default 32)")


def resolve(target: str) -> Target:
    """Which bucket and key (prefix) a command-line target names."""
    if target.startswith("s3://"):
        bucket, _, prefix = target[len("s3://") :].partition("/")
        return Target(bucket, prefix, {})
    found = mounts.find(Path(target))
    if found is None:
        raise SystemExit(f"cwfs warm: {target} is not on a cwfs mount of this user (nor an s3:// URL)")
    record, key = found
    return Target(record.bucket, key, record.settings)


def _config(target: Target, args: argparse.Namespace) -> Config:
    values = argparse.Namespace(bucket=target.bucket, mountpoint=Path("/"))
    for name in ("endpoint", "region", "profile", "addressing_style", "lota_endpoint"):
        setattr(values, name, getattr(args, name) or target.settings.get(name))
    return build_config(values)


async def _objects(store: ObjectStore, prefix: str) -> list[ObjectInfo]:
    if prefix and not prefix.endswith("/"):
        info = await store.head_object(prefix)
        if info is not None:
            return [info]
        prefix += "/"
    objects, token = [], None
    while True:
        page = await store.list_page(prefix, token, delimiter="")
        objects.extend(page.objects)
        if (token := page.next_token) is None:
            return objects


class Progress:
    """One line on stderr, redrawn in place on a terminal, every few seconds otherwise."""

    def __init__(self, total: int, total_bytes: int) -> None:
        self.total, self.total_bytes = total, total_bytes
        self.done = self.done_bytes = 0
        self._tty = sys.stderr.isatty()
        self._last = 0.0

    def advance(self, size: int) -> None:
        self.done += 1
        self.done_bytes += size
        now = time.monotonic()
        if self.done == self.total or now - self._last >= (0.1 if self._tty else 5.0):
            self._last = now
            filled = 30 * self.done // max(1, self.total)
            line = f"[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} objects, {self.done_bytes / 2**30:.2f}/{self.total_bytes / 2**30:.2f} GiB"
            print(("\r" if self._tty else "") + line, end="" if self._tty and self.done < self.total else "\n", file=sys.stderr, flush=True)


async def warm(targets: list[Target], args: argparse.Namespace) -> Summary:
    summary = Summary()
    for target in targets:
        config = _config(target, args)
        store = ObjectStore(config)
        lota = ObjectStore(config, endpoint=config.lota_endpoint, max_attempts=3)
        objects = await _objects(store, target.prefix)
        large = [o for o in objects if o.size >= LOTA_MIN_SIZE]
        summary.skipped += len(objects) - len(large)
        progress = Progress(len(large), sum(o.size for o in large))

        async def prestage(info: ObjectInfo) -> None:
            try:
                await lota.prestage(info.key)
                summary.warmed += 1
                summary.warmed_bytes += info.size
            except StoreError as exc:
                summary.errors += 1
                log.error("could not pre-stage %r: %s", info.key, exc)
            progress.advance(info.size)

        await gather([lambda info=info: prestage(info) for info in large], limiter=trio.CapacityLimiter(args.concurrency))
    return summary


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="cwfs warm: %(message)s")
    summary = trio.run(warm, [resolve(t) for t in args.targets], args)
    print(
        f"warmed {summary.warmed} objects ({summary.warmed_bytes / 2**30:.2f} GiB); "
        f"skipped {summary.skipped} smaller than 4 MB; {summary.errors} errors",
        file=sys.stderr,
    )
    return 1 if summary.errors else 0
