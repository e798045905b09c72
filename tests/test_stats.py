"""Issue 15, statistics: ``cwfs stats MOUNTPOINT``, ``--metrics-port`` and SIGUSR1,
through real mounts, against the embedded server's own request counts."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from conftest import cwfs_env, wait_for

from cwfs.stats import render

MiB = 1 << 20
DOCS = Path(__file__).resolve().parent.parent / "docs" / "running.md"


def stats(server, mountpoint: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cwfs", "stats", str(mountpoint), *flags],
        env=cwfs_env(server), capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def figures(server, mountpoint: Path) -> dict:
    done = stats(server, mountpoint, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def requests_by_operation(snapshot: dict) -> Counter[str]:
    """Attempts per operation, every endpoint and outcome together."""
    counts: Counter[str] = Counter()
    for operations in snapshot["requests"].values():
        for operation, outcomes in operations.items():
            counts[operation] += sum(outcomes.values())
    return counts


def outcomes(snapshot: dict, operation: str) -> dict[str, int]:
    return snapshot["requests"]["primary"].get(operation, {})


def work(mnt: Path, s3, bucket: str) -> None:
    """Writes, a listing, reads, a rename, a removal, a missing name, and a lost race."""
    for name in ("a.bin", "b.txt", "c.txt"):
        (mnt / name).write_bytes(os.urandom(3 * MiB) if name == "a.bin" else b"small")
    assert sorted(os.listdir(mnt)) == ["a.bin", "b.txt", "c.txt"]
    assert len((mnt / "a.bin").read_bytes()) == 3 * MiB
    os.rename(mnt / "b.txt", mnt / "d.txt")
    os.unlink(mnt / "c.txt")
    assert not (mnt / "missing").exists()
    racer = open(mnt / "race.txt", "wb")  # closed below, after the race
    racer.write(b"ours")
    s3.put_object(Bucket=bucket, Key="race.txt", Body=b"theirs")
    with pytest.raises(FileExistsError):
        racer.close()


def test_the_counters_equal_the_servers_own_request_counts(server, bucket, s3, mount):
    mounted = mount(bucket, "--metadata-ttl", "0")
    before = figures(server, mounted.path)
    server.reset()
    work(mounted.path, s3, bucket)
    theirs = dict(server.counts())
    theirs["PutObject"] -= 1  # the racer's, sent by boto3 here

    def settled() -> bool:
        after = figures(server, mounted.path)
        ours = requests_by_operation(after) - requests_by_operation(before)
        return dict(ours) == theirs

    wait_for(settled, timeout=10)
    after = figures(server, mounted.path)
    assert outcomes(after, "PutObject").get("PreconditionFailed", 0) == 1 + outcomes(
        before, "PutObject"
    ).get("PreconditionFailed", 0)
    assert after["requests"]["primary"]["RenameObject"] == {"ok": 1}
    uploads = after["uploads"]
    assert uploads["completed"] - before["uploads"]["completed"] == 3
    assert uploads["failed"] - before["uploads"]["failed"] == 1
    assert uploads["kept"] == 1 and uploads["kept_bytes"] == len(b"ours")
    assert uploads["in_flight"] == 0
    received = after["bytes_received"]["primary"] - before["bytes_received"]["primary"]
    assert received >= 3 * MiB  # what the read of a.bin fetched
    delivered = after["read_ahead"]["delivered_bytes"] - before["read_ahead"]["delivered_bytes"]
    assert delivered == 3 * MiB
    assert after["lookups"]["miss"] > before["lookups"].get("miss", 0)
    assert after["mountpoint"] == str(mounted.path) and after["bucket"] == bucket


def test_reads_through_lota_are_counted_apart_from_the_primary_endpoint(server, bucket, s3, mount):
    body = os.urandom(2 * MiB)
    s3.put_object(Bucket=bucket, Key="big.bin", Body=body)
    mounted = mount(bucket, "--lota-endpoint", server.lota_url, "--lota", "on")
    server.reset()
    assert (mounted.path / "big.bin").read_bytes() == body
    lota = server.counts("lota")
    assert lota.get("GetObject", 0) > 0 and "GetObject" not in server.counts()

    def counted() -> bool:  # the last GET may still be finishing after the read returned
        got = figures(server, mounted.path)["requests"]["lota"].get("GetObject")
        return got == {"ok": lota["GetObject"]}

    wait_for(counted, timeout=10)
    after = figures(server, mounted.path)
    assert "GetObject" not in after["requests"]["primary"]
    assert after["bytes_received"] == {"primary": 0, "lota": 2 * MiB}
    assert after["read_ahead"] == {"fetched_bytes": 2 * MiB, "delivered_bytes": 2 * MiB}


def test_stats_prints_figures_for_people_and_fails_clearly_without_a_mount(
    server, bucket, mount, tmp_path
):
    mounted = mount(bucket)
    (mounted.path / "f.txt").write_text("x")
    assert (mounted.path / "f.txt").read_text() == "x"
    done = stats(server, mounted.path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"cwfs mount of bucket {bucket} on {mounted.path}, up ")
    assert re.search(r"^requests to primary: .*PutObject 1 ok", done.stdout, re.M)
    assert re.search(r"^uploads: 0 in flight, 1 completed, 0 failed, 0 kept", done.stdout, re.M)
    nowhere = stats(server, tmp_path)
    assert nowhere.returncode == 1
    assert f"cwfs: no cwfs mount answers at {tmp_path}" in nowhere.stderr


def test_sigusr1_logs_the_statistics(server, bucket, mount):
    mounted = mount(bucket)
    (mounted.path / "f.txt").write_text("x")
    mounted.proc.send_signal(signal.SIGUSR1)
    wait_for(lambda: "statistics (SIGUSR1)" in mounted.log(), timeout=10)
    logged = mounted.log().split("statistics (SIGUSR1):\n", 1)[1]
    assert logged.startswith(f"cwfs mount of bucket {bucket} on {mounted.path}")
    assert "PutObject 1 ok" in logged
    assert mounted.proc.poll() is None  # the mount goes on


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """``/metrics``: each sample line's name and labels -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, _, value = line.rpartition(" ")
            samples[series] = float(value)
    return samples


def test_metrics_port_serves_the_same_counts_to_prometheus(server, bucket, mount):
    port = free_port()
    mounted = mount(bucket, "--metrics-port", f"127.0.0.1:{port}")
    (mounted.path / "m.txt").write_text("metrics")
    assert (mounted.path / "m.txt").read_text() == "metrics"
    samples = scrape(port)
    put = 'cwfs_requests_total{endpoint="primary",operation="PutObject",outcome="ok"}'
    assert samples[put] == 1.0
    assert samples["cwfs_uploads_completed_total"] == 1.0
    assert samples[f'cwfs_mount_info{{bucket="{bucket}",mountpoint="{mounted.path}"}}'] == 1.0

    def scraped_as_counted() -> bool:
        """The same counts both ways (a GET may still be finishing after the read)."""
        scraped, counted = scrape(port), requests_by_operation(figures(server, mounted.path))
        by_operation: Counter[str] = Counter()
        for series, value in scraped.items():
            if found := re.search(r'operation="(\w+)"', series):
                by_operation[found[1]] += int(value)
        return by_operation == counted

    wait_for(scraped_as_counted, timeout=10)
    served = {series.partition("{")[0] for series in samples}
    documented = set(re.findall(r"`(cwfs_\w+?)(?:\{|`)", DOCS.read_text()))
    assert documented and documented <= served, documented - served


def test_a_busy_metrics_port_is_logged_and_the_mount_goes_on(server, bucket, mount):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        mounted = mount(bucket, "--metrics-port", f"127.0.0.1:{port}")
        wait_for(lambda: "cannot serve metrics on 127.0.0.1" in mounted.log(), timeout=10)
        (mounted.path / "still.txt").write_text("works")
        assert (mounted.path / "still.txt").read_text() == "works"


def test_render_reads_every_figure_of_a_snapshot():
    snapshot = {
        "bucket": "b", "mountpoint": "/m", "uptime_seconds": 3725.2,
        "requests": {"primary": {"GetObject": {"ok": 4, "SlowDown": 1}}, "lota": {}},
        "retries": {"primary": 1, "lota": 0}, "throttled": {"primary": 1, "lota": 0},
        "bytes_received": {"primary": 5 * MiB, "lota": 0},
        "read_ahead": {"fetched_bytes": 8 * MiB, "delivered_bytes": 6 * MiB},
        "lookups": {"hit": 3, "negative": 1, "miss": 4}, "directory_reads": {},
        "metadata_cache_entries": 12,
        "uploads": {"in_flight": 0, "completed": 2, "failed": 1, "kept": 1, "kept_bytes": 10},
        "staged_bytes": 0, "staging_limit_bytes": 1 << 30,
        "read_ahead_memory": {"in_use": 0, "limit": 256 * MiB, "peak": 64 * MiB},
    }  # fmt: skip
    assert render(snapshot).splitlines() == [
        "cwfs mount of bucket b on /m, up 1h02m05s",
        "requests to primary: GetObject 4 ok, 1 SlowDown",
        "  1 retries, 1 throttled, 5.0 MiB of data received",
        "requests to lota: none",
        "  0 retries, 0 throttled, 0 B of data received",
        "read-ahead: 8.0 MiB fetched, 6.0 MiB delivered (75% of what was fetched)",
        "metadata cache: lookups 50% from the cache (8 in all), directory reads - from the "
        "cache (0 in all); 12 entries",
        "uploads: 0 in flight, 2 completed, 1 failed, 1 kept (10 B)",
        "staged: 0 B of 1.0 GiB; read-ahead memory: 0 B of 256.0 MiB (peak 64.0 MiB)",
    ]
