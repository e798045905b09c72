"""``cwfs warm``: pre-stage objects into the LOTA cache before a job reads them.

CoreWeave's LOTA pulls a whole object into its node-local cache when it receives a
HeadObject with ``Range: bytes=0-0``, without sending the body back. Warming a
dataset before the first epoch makes that epoch read from the cache. LOTA only
caches objects of 4 MB or more, so smaller ones are skipped.

Targets are paths on a cwfs mount (its record, `cwfs.mountrecords`, tells which bucket,
key and endpoints they are) or ``s3://bucket/prefix`` URLs.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from cwfs import mountrecords
from cwfs.config import ConfigError, StoreSettings, add_options, store_settings
from cwfs.errors import StoreError
from cwfs.preflight import MountError, refusal
from cwfs.store import ObjectInfo, ObjectStore
from cwfs.tasks import gather

log = logging.getLogger(__name__)

LOTA_MIN_SIZE = 4_000_000  # LOTA caches objects of 4 MB or more
LOTA_ATTEMPTS = 3
# The mount options warm shares; given neither as flags nor by the mount, they come from
# the environment, the profile files or the defaults, as for cwfs mount.
OPTIONS = ("endpoint", "lota_endpoint", "profile", "region", "addressing_style")


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
    add_options(parser, OPTIONS)  # for a path on a mount, the default is the mount's
    parser.add_argument(
        "--concurrency", type=int, default=32, help="prestage requests in flight (default 32)"
    )


def resolve(target: str) -> Target:
    """Which bucket and key (prefix) a command-line target names."""
    if target.startswith("s3://"):
        bucket, _, prefix = target[len("s3://") :].partition("/")
        return Target(bucket, prefix, {})
    found = mountrecords.find(Path(target))
    if found is None:
        raise SystemExit(
            f"cwfs warm: {target} is not on a cwfs mount of this user (nor an s3:// URL)"
        )
    record, key = found
    return Target(record.bucket, key, record.settings)


def _settings(target: Target, args: argparse.Namespace) -> StoreSettings:
    """The flags, else what the target's mount used, else as cwfs mount would choose."""
    given = {name: getattr(args, name) or target.settings.get(name) for name in OPTIONS}
    return store_settings(target.bucket, argparse.Namespace(**given))


async def _objects(store: ObjectStore, prefix: str) -> list[ObjectInfo]:
    if prefix and not prefix.endswith("/"):
        info = await store.head_object(prefix)
        if info is not None:
            return [info]
        prefix += "/"
    return [info async for info in store.list_all(prefix)]


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
            print(
                ("\r" if self._tty else "") + line,
                end="" if self._tty and self.done < self.total else "\n",
                file=sys.stderr,
                flush=True,
            )


async def warm(targets: list[tuple[Target, StoreSettings]], concurrency: int) -> Summary:
    """Pre-stage every target; a bucket that cannot be listed is a `MountError`."""
    summary = Summary()
    for target, settings in targets:
        try:
            await _warm_target(target, settings, concurrency, summary)
        except StoreError as exc:
            raise refusal(settings, exc.code, exc.message) from None
    return summary


async def _warm_target(
    target: Target, settings: StoreSettings, concurrency: int, summary: Summary
) -> None:
    store = ObjectStore(settings)
    lota = ObjectStore(settings.via_lota(LOTA_ATTEMPTS))
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

    jobs = [functools.partial(prestage, info) for info in large]
    await gather(jobs, limiter=trio.CapacityLimiter(concurrency))


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, format="cwfs warm: %(message)s")
    try:
        targets = [(target, _settings(target, args)) for target in map(resolve, args.targets)]
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    try:
        summary = trio.run(warm, targets, args.concurrency)
    except MountError as exc:
        log.error("%s", exc)
        return 2
    print(
        f"warmed {summary.warmed} objects ({summary.warmed_bytes / 2**30:.2f} GiB); "
        f"skipped {summary.skipped} smaller than 4 MB; {summary.errors} errors",
        file=sys.stderr,
    )
    return 1 if summary.errors else 0
