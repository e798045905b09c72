"""A running mount's statistics: ``cwfs stats MOUNTPOINT``, ``--metrics-port`` and SIGUSR1.

The figures are counters the mechanisms keep anyway (each store's `cwfs.retry.Retrier`
counts requests by operation and outcome; the namespace counts how lookups were
answered; the uploader, the staging area, the memory budget and the read-ahead count
their own); a snapshot reads them on the trio thread, so it never sees one half
updated. A mount serves its snapshots as JSON on a Unix socket next to its mount record
(`cwfs.mountrecords`), readable by its user only, rather than as extended attributes:
a filesystem that answers getxattr is asked for two of them on every ``ls -l`` of
every file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from cwfs.config import state_dir
from cwfs.memory import MemoryBudget
from cwfs.namespace import Namespace
from cwfs.prefetch import ReadCounts
from cwfs.staging import StagingArea, StagingBudget
from cwfs.store import ObjectStore
from cwfs.upload import Uploader

log = logging.getLogger(__name__)

Snapshot = dict[str, Any]


@dataclass
class Sources:
    """Where one bucket's figures are read from."""

    bucket: str
    stores: Mapping[str, ObjectStore]  # "primary", and "lota" when reads go there
    namespace: Namespace
    uploader: Uploader
    staging: StagingArea
    reads: ReadCounts


class Report:
    """What a mount reports: the figures of its bucket (or buckets), its mount point
    and how long it has been up."""

    def __init__(self, mountpoint: str, figures: Callable[[], Snapshot]) -> None:
        self.mountpoint = mountpoint
        self._figures = figures
        self._started = trio.current_time()

    def snapshot(self) -> Snapshot:
        uptime = round(trio.current_time() - self._started, 3)
        return {"mountpoint": self.mountpoint, "uptime_seconds": uptime, **self._figures()}


def store_figures(stores: Mapping[str, ObjectStore]) -> Snapshot:
    """The requests of ``stores`` (by endpoint name), and the data they received."""
    requests: dict[str, dict[str, dict[str, int]]] = {}
    for name, store in stores.items():
        by_operation = requests.setdefault(name, {})
        for (operation, outcome), count in sorted(store.retrier.outcomes.items()):
            by_operation.setdefault(operation, {})[outcome] = count
    return {
        "requests": requests,
        "retries": {name: store.retrier.retries for name, store in stores.items()},
        "throttled": {name: store.retrier.throttled for name, store in stores.items()},
        "bytes_received": {name: store.bytes_received for name, store in stores.items()},
    }


def bucket_figures(sources: Sources) -> Snapshot:
    """The figures of one bucket's filesystem, as JSON-ready values."""
    uploader, staging = sources.uploader, sources.staging
    return {
        "bucket": sources.bucket,
        **store_figures(sources.stores),
        "read_ahead": {
            "fetched_bytes": sources.reads.fetched,
            "delivered_bytes": sources.reads.delivered,
        },
        "lookups": {"hit": 0, "negative": 0, "miss": 0} | sources.namespace.lookups,
        "directory_reads": {"hit": 0, "miss": 0} | sources.namespace.dir_reads,
        "metadata_cache_entries": sources.namespace.cache.entries,
        "uploads": {
            "in_flight": uploader.in_flight,
            "completed": uploader.completed,
            "failed": uploader.failed,
            "kept": staging.kept,
            "kept_bytes": staging.kept_bytes,
        },
    }


def limit_figures(memory: MemoryBudget, staging: StagingBudget) -> Snapshot:
    """What the mount's buckets share: staged bytes and read-ahead memory, in use and
    allowed."""
    return {
        "staged_bytes": staging.used,
        "staging_limit_bytes": staging.limit,
        "read_ahead_memory": {"in_use": memory.used, "limit": memory.limit, "peak": memory.peak},
    }


def blank() -> Snapshot:
    """The figures of no bucket: every count zero."""
    return {
        "bucket": "",
        "requests": {},
        "retries": {},
        "throttled": {},
        "bytes_received": {},
        "read_ahead": {"fetched_bytes": 0, "delivered_bytes": 0},
        "lookups": {"hit": 0, "negative": 0, "miss": 0},
        "directory_reads": {"hit": 0, "miss": 0},
        "metadata_cache_entries": 0,
        "uploads": {"in_flight": 0, "completed": 0, "failed": 0, "kept": 0, "kept_bytes": 0},
    }


def combined(total: Snapshot, part: Snapshot) -> Snapshot:
    """``part``'s figures added into ``total`` (an ``--all-buckets`` mount sums its
    buckets'); words are left alone."""
    for name, value in part.items():
        if isinstance(value, dict):
            combined(total.setdefault(name, {}), value)
        elif isinstance(value, (int, float)):
            total[name] = total.get(name, 0) + value
    return total


def render(figures: Snapshot) -> str:
    """The snapshot for people: a few lines, sizes in binary units."""
    what = f"bucket {figures['bucket']}" if figures["bucket"] else "every bucket"
    lines = [
        f"cwfs mount of {what} on {figures['mountpoint']}, up {_duration(figures['uptime_seconds'])}"
    ]
    for endpoint, operations in figures["requests"].items():
        text = "; ".join(
            f"{operation} " + ", ".join(f"{count} {outcome}" for outcome, count in outcomes.items())
            for operation, outcomes in operations.items()
        )
        lines.append(f"requests to {endpoint}: {text or 'none'}")
        lines.append(
            f"  {figures['retries'][endpoint]} retries, {figures['throttled'][endpoint]} "
            f"throttled, {_size(figures['bytes_received'][endpoint])} of data received"
        )
    ahead = figures["read_ahead"]
    lines.append(
        f"read-ahead: {_size(ahead['fetched_bytes'])} fetched, "
        f"{_size(ahead['delivered_bytes'])} delivered "
        f"({_ratio(ahead['delivered_bytes'], ahead['fetched_bytes'])} of what was fetched)"
    )
    lines.append(
        f"metadata cache: lookups {_hit_rate(figures['lookups'])}, directory reads "
        f"{_hit_rate(figures['directory_reads'])}; {figures['metadata_cache_entries']} entries"
    )
    uploads, memory = figures["uploads"], figures["read_ahead_memory"]
    lines.append(
        f"uploads: {uploads['in_flight']} in flight, {uploads['completed']} completed, "
        f"{uploads['failed']} failed, {uploads['kept']} kept ({_size(uploads['kept_bytes'])})"
    )
    lines.append(
        f"staged: {_size(figures['staged_bytes'])} of {_size(figures['staging_limit_bytes'])}; "
        f"read-ahead memory: {_size(memory['in_use'])} of {_size(memory['limit'])} "
        f"(peak {_size(memory['peak'])})"
    )
    return "\n".join(lines)


def _hit_rate(counts: Mapping[str, int]) -> str:
    answered = counts.get("hit", 0) + counts.get("negative", 0)
    total = answered + counts.get("miss", 0)
    return f"{_ratio(answered, total)} from the cache ({total} in all)"


def _ratio(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else "-"


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    minutes, second = divmod(int(seconds), 60)
    hours, minute = divmod(minutes, 60)
    return f"{hours}h{minute:02d}m{second:02d}s" if hours else f"{minute}m{second:02d}s"


def socket_path(mountpoint: str) -> Path:
    """The statistics socket of the mount at ``mountpoint`` (a hash keeps the path short
    enough for a Unix socket whatever the mount point)."""
    digest = hashlib.sha256(mountpoint.encode()).hexdigest()[:20]
    return state_dir() / "mounts" / f"{digest}.sock"


async def serve_statistics(report: Report) -> None:
    """Answer each connection to the mount's statistics socket with a snapshot in JSON."""
    path = socket_path(report.mountpoint)
    listener = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # left by a mount that was killed
        await listener.bind(str(path))
        os.chmod(path, 0o600)
        listener.listen()
    except OSError as exc:
        log.warning("no statistics socket at %s (cwfs stats will not answer): %s", path, exc)
        listener.close()
        return

    async def answer(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(json.dumps(report.snapshot()).encode() + b"\n")

    try:
        await trio.serve_listeners(answer, [trio.SocketListener(listener)])
    finally:
        path.unlink(missing_ok=True)


def query(mountpoint: Path, timeout: float = 10.0) -> Snapshot:
    """The snapshot of the mount at ``mountpoint``, from its socket (OSError if none)."""
    path = socket_path(os.path.realpath(mountpoint))
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout)
        client.connect(str(path))
        data = bytearray()
        while chunk := client.recv(65536):
            data += chunk
            if time.monotonic() > deadline:
                raise TimeoutError(f"the mount at {mountpoint} did not answer in {timeout:.0f} s")
    result: Snapshot = json.loads(data)
    return result
