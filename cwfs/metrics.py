"""``--metrics-port``: the mount's statistics (`cwfs.stats`) for Prometheus.

prometheus_client serves the scrape from a thread of its own; each scrape asks the trio
thread for a snapshot, so the figures are read where they are written, and a scrape
costs the mount one snapshot, nothing between scrapes. Counters end in ``_total`` in
the exposition; every series of a mount can be joined with ``cwfs_mount_info`` (bucket
and mount point) when one machine runs several.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import trio
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from cwfs.stats import Report, Snapshot

log = logging.getLogger(__name__)


class _MountCollector(Collector):
    def __init__(self, report: Report, token: trio.lowlevel.TrioToken) -> None:
        self._report = report
        self._token = token

    def collect(self) -> Iterator[Metric]:
        figures = trio.from_thread.run_sync(self._report.snapshot, trio_token=self._token)
        yield from families(figures)


def families(figures: Snapshot) -> Iterator[Metric]:
    """The snapshot as Prometheus metric families."""
    info = GaugeMetricFamily(
        "cwfs_mount_info", "the mounted bucket", labels=["bucket", "mountpoint"]
    )
    info.add_metric([figures["bucket"], figures["mountpoint"]], 1)
    yield info
    requests = CounterMetricFamily(
        "cwfs_requests",
        "S3 requests sent, each attempt, by endpoint, operation and outcome",
        labels=["endpoint", "operation", "outcome"],
    )
    for endpoint, operations in figures["requests"].items():
        for operation, outcomes in operations.items():
            for outcome, count in outcomes.items():
                requests.add_metric([endpoint, operation, outcome], count)
    yield requests
    for name, text in (
        ("retries", "requests sent again after a failed attempt"),
        ("throttled", "throttle answers (SlowDown, 429, 503)"),
        ("bytes_received", "object data received by GetObject"),
    ):
        family = CounterMetricFamily(f"cwfs_{name}", text, labels=["endpoint"])
        for endpoint, count in figures[name].items():
            family.add_metric([endpoint], count)
        yield family
    yield from _flat_families(figures)


def _flat_families(figures: Snapshot) -> Iterator[Metric]:
    ahead, uploads, memory = figures["read_ahead"], figures["uploads"], figures["read_ahead_memory"]
    yield _counter(
        "read_ahead_fetched_bytes", "bytes the read-ahead fetched", ahead["fetched_bytes"]
    )
    yield _counter("read_delivered_bytes", "bytes reads returned", ahead["delivered_bytes"])
    for name, counts in (
        ("lookups", figures["lookups"]),
        ("directory_reads", figures["directory_reads"]),
    ):
        family = CounterMetricFamily(
            f"cwfs_{name}", f"{name} by how the cache answered", labels=["answer"]
        )
        for answer, count in counts.items():
            family.add_metric([answer], count)
        yield family
    yield _counter("uploads_completed", "files committed", uploads["completed"])
    yield _counter("uploads_failed", "file commits that failed", uploads["failed"])
    yield _counter("kept_files", "files kept in the cache directory", uploads["kept"])
    yield _counter("kept_bytes", "bytes kept in the cache directory", uploads["kept_bytes"])
    for name, text, value in (
        ("uploads_in_flight", "file commits in progress", uploads["in_flight"]),
        (
            "metadata_cache_entries",
            "names in the metadata cache",
            figures["metadata_cache_entries"],
        ),
        ("staged_bytes", "bytes staged for upload", figures["staged_bytes"]),
        ("staging_limit_bytes", "--cache-limit", figures["staging_limit_bytes"]),
        ("read_ahead_memory_bytes", "read-ahead memory in use", memory["in_use"]),
        ("read_ahead_memory_limit_bytes", "--max-memory", memory["limit"]),
        ("read_ahead_memory_peak_bytes", "read-ahead memory at its peak", memory["peak"]),
        ("uptime_seconds", "seconds since the mount began", figures["uptime_seconds"]),
    ):
        yield GaugeMetricFamily(f"cwfs_{name}", text, value=value)


def _counter(name: str, text: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"cwfs_{name}", text, value=value)


def serve_metrics(listen: tuple[str, int], report: Report) -> Any:
    """Start serving ``/metrics`` at ``listen`` (address, port); returns the server, to
    shut down at unmount."""
    address, port = listen
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_MountCollector(report, trio.lowlevel.current_trio_token()))
    server, _ = start_http_server(port, address, registry=registry)
    log.info("serving metrics on http://%s:%d/metrics", address, port)
    return server
