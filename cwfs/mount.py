"""Run one mount: check the bucket, mount, serve FUSE requests until unmounted or signalled."""

from __future__ import annotations

import functools
import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pyfuse3
import trio

from cwfs import notify
from cwfs.attrstore import AttrStore, keep_written
from cwfs.buckets import Buckets
from cwfs.config import Config
from cwfs.errors import StoreError
from cwfs.fs import Filesystem, max_file_size
from cwfs.fuse import FuseOperations
from cwfs.kept import (
    MountLock,
    Record,
    UploadLedger,
    abort_stale,
    cache_directories,
    default_cache_base,
    find_kept,
    find_stale_uploads,
    remove_stale_locks,
    summary,
)
from cwfs.lota import ReadEndpoint, lota_address, reachable
from cwfs.memory import MemoryBudget, tune_malloc_for_read_buffers
from cwfs.metacache import MetadataCache
from cwfs.metrics import serve_metrics
from cwfs.mountrecords import write_record
from cwfs.namespace import Namespace
from cwfs.prefetch import KERNEL_READ_AHEAD, Prefetcher, ReadCounts
from cwfs.preflight import MountError, check_mountable
from cwfs.rename import Renamer
from cwfs.staging import StagingArea, StagingBudget, create_cache_dir
from cwfs.stats import (
    Report,
    Snapshot,
    Sources,
    blank,
    bucket_figures,
    combined,
    limit_figures,
    render,
    serve_statistics,
    store_figures,
)
from cwfs.store import ObjectStore
from cwfs.upload import Uploader

log = logging.getLogger(__name__)

LOTA_ATTEMPTS = 2  # fail over to the primary endpoint quickly
KERNEL_READ_AHEAD_KB = KERNEL_READ_AHEAD >> 10
EXIT_ABANDONED = 3  # exit status when requests in flight were left behind at unmount
EXIT_KEPT = 4  # exit status when files open for writing at unmount were not uploaded


def fuse_options(config: Config) -> set[str]:
    options = set(pyfuse3.default_options)
    options |= {f"fsname=cwfs:{config.bucket}", "subtype=cwfs"}
    if config.read_only:
        options.add("ro")
    if config.allow_other:
        options.add("allow_other")
    return options | set(config.fuse_options)


async def _terminate_on_signal(
    timeout: float, cache_dir: Path, record: Path | None, report: Callable[[], None]
) -> None:
    """Unmount on SIGINT or SIGTERM, once the requests in flight are answered.

    Requests that keep the mount longer than ``timeout`` seconds (an upload to a
    server that stopped answering), or a second signal, are left behind: the mount
    goes, and the process exits at once, before a supervisor's SIGKILL would leave a
    dead mount point. What was not uploaded stays in the cache directory.
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, unmounting", signal.Signals(signum).name)
            notify.stopping(f"received {signal.Signals(signum).name}, unmounting")
            pyfuse3.terminate()
            break
        with trio.move_on_after(timeout):
            async for signum in signals:
                log.warning(
                    "received %s again: not waiting for the requests in flight",
                    signal.Signals(signum).name,
                )
                break
    log.error(
        "requests still in flight (uploads the server does not answer?): unmounting without them; data not uploaded stays in %s",
        cache_dir,
    )
    report()
    if record is not None:
        record.unlink(missing_ok=True)
    pyfuse3.close(unmount=True)
    logging.shutdown()
    os._exit(EXIT_ABANDONED)


async def _read_endpoint(config: Config, primary: ObjectStore) -> ReadEndpoint:
    """Data reads go to LOTA when ``--lota`` says so or, in auto, when it answers."""
    lota = None
    if config.lota != "off":
        address = lota_address(config.lota_endpoint, config.bucket, config.addressing_style)
        if config.lota == "on" or await trio.to_thread.run_sync(reachable, *address):
            lota = ObjectStore(config.store_settings.via_lota(LOTA_ATTEMPTS))
            log.info("reading data through LOTA at %s (%s:%d)", config.lota_endpoint, *address)
        else:
            log.info("LOTA (%s:%d) is not reachable: reading from %s", *address, config.endpoint)
    return ReadEndpoint(primary, lota)


def attribute_file(setting: str) -> Path | None:
    """Where the attribute store lives: ``--attribute-store``, its default, or None (off)."""
    if setting == "off":
        return None
    return Path(setting) if setting else default_cache_base() / "attributes.sqlite"


@dataclass
class Limits:
    """What the buckets of a mount share: ``--max-memory`` of read-ahead buffers and
    ``--cache-limit`` of staged data are the process's, however many buckets it serves."""

    memory: MemoryBudget
    staging: StagingBudget

    @classmethod
    def of(cls, config: Config) -> Limits:
        return cls(MemoryBudget(config.max_memory), StagingBudget(config.cache_limit))

    def figures(self) -> Snapshot:
        return limit_figures(self.memory, self.staging)


def build_filesystem(
    config: Config,
    store: ObjectStore,
    reads: ReadEndpoint,
    versioned: bool,
    cache_dir: Path,
    nursery: trio.Nursery,
    mount_lock: str,
    limits: Limits,
) -> tuple[Filesystem, Sources]:
    """The filesystem core of one bucket, and where its statistics are read from.

    Its read-ahead runs in ``nursery``; ``mount_lock`` names the lock the mount holds in
    ``cache_dir`` (`cwfs.kept`). The in-process tests build their core here too.
    """
    settings = config.store_settings
    cache = MetadataCache(config.metadata_ttl, config.negative_ttl, config.metadata_cache_entries)
    uploader = Uploader(
        store,
        config.part_size,
        config.upload_concurrency,
        config.checksum,
        config.conflict_retries,
        UploadLedger(cache_dir, config.bucket, settings.endpoint, mount_lock),
        nursery,
    )
    renamer = Renamer(store, uploader, config.rename_mode, versioned, config.max_concurrency)
    read_counts = ReadCounts()
    readers = functools.partial(
        Prefetcher,
        reads,
        budget=limits.memory,
        nursery=nursery,
        part_size=config.read_part_size,
        max_window=config.max_read_ahead,
        counts=read_counts,
    )
    known = AttrStore(
        attribute_file(config.attribute_store),
        settings.endpoint,
        config.bucket,
        config.metadata_cache_entries,
    )
    nursery.start_soon(keep_written, known)
    namespace = Namespace(store, cache, config.prefix, config.exact_metadata, known, nursery)
    record = Record(config.bucket, settings.endpoint, "", None, mount_lock)
    staging = StagingArea(cache_dir, limits.staging, record)
    core = Filesystem(
        namespace,
        staging,
        uploader,
        renamer,
        readers,
        config.read_only,
        max_file_size(settings.is_coreweave),
    )
    stores = {"primary": store} | ({"lota": reads.lota} if reads.lota is not None else {})
    sources = Sources(config.bucket, stores, namespace, uploader, staging, read_counts)
    return core, sources


@dataclass
class OpenedBucket:
    """One bucket's filesystem in a running mount, and what goes with it at unmount."""

    core: Filesystem
    sources: Sources
    using_lota: bool
    cache_dir: Path
    private: bool  # the cache directory is this mount's own
    lock: MountLock

    def close(self) -> None:
        self.lock.release()
        if self.private:
            _remove_if_empty(self.cache_dir)


async def open_bucket(
    config: Config, store: ObjectStore, limits: Limits, nursery: trio.Nursery
) -> OpenedBucket:
    """The filesystem of ``config.bucket``: its cache directory locked, its read endpoint
    chosen, and what earlier mounts left there reported (in the background)."""
    versioned = (
        not config.read_only
        and config.rename_mode != "copy"
        and await store.versioning_status() is not None
    )
    reads = await _read_endpoint(config, store)
    cache_dir, private = create_cache_dir(config.cache_dir, config.bucket)
    lock = MountLock(cache_dir)
    core, sources = build_filesystem(
        config, store, reads, versioned, cache_dir, nursery, lock.name, limits
    )
    nursery.start_soon(_after_earlier_mounts, config, store, cache_dir)
    return OpenedBucket(core, sources, reads.using_lota, cache_dir, private, lock)


class EveryBucket:
    """The buckets of an ``--all-buckets`` mount (`cwfs.buckets`), each opened as a mount
    of it would be, on its first use, signed for its own region."""

    def __init__(
        self, config: Config, store: ObjectStore, limits: Limits, nursery: trio.Nursery
    ) -> None:
        self._config = config
        self._store = store
        self._limits = limits
        self._nursery = nursery
        self.opened: list[OpenedBucket] = []
        self.core = Buckets(store.list_buckets, self._open, config.metadata_ttl)

    async def _open(self, bucket: str) -> Filesystem:
        region = await self._region(bucket)
        config = replace(self._config, bucket=bucket, all_buckets=False, region=region)
        store = ObjectStore(config.store_settings)
        opened = await open_bucket(config, store, self._limits, self._nursery)
        self.opened.append(opened)
        return opened.core

    async def _region(self, bucket: str) -> str | None:
        """The bucket's region (CoreWeave: availability zone), else the mount's."""
        try:
            return await self._store.bucket_region(bucket) or self._config.region
        except StoreError as exc:
            log.warning(
                "cannot read the region of bucket %r (%s): signing for %s",
                bucket,
                exc.context(),
                self._config.region or "the default region",
            )
            return self._config.region

    def figures(self) -> Snapshot:
        """Every opened bucket's figures added up, with the account's own requests and
        the limits they share."""
        total = combined(blank(), store_figures({"primary": self._store}))
        for opened in self.opened:
            combined(total, bucket_figures(opened.sources))
        return total | self._limits.figures()


async def _open_mount(
    config: Config, store: ObjectStore, limits: Limits, nursery: trio.Nursery
) -> tuple[Filesystem | Buckets, list[OpenedBucket], Report]:
    """The mount's core: one bucket's filesystem, or with ``--all-buckets`` the router
    to every bucket's; the buckets opened (more may come), and the mount's report."""
    mountpoint = str(config.mountpoint)
    if config.all_buckets:
        every = EveryBucket(config, store, limits, nursery)
        return every.core, every.opened, Report(mountpoint, every.figures)
    opened = await open_bucket(config, store, limits, nursery)
    return (
        opened.core,
        [opened],
        Report(mountpoint, lambda: bucket_figures(opened.sources) | limits.figures()),
    )


async def serve(config: Config, ready: Callable[[str | None], None]) -> int:
    """Mount ``config.bucket`` (or every bucket) and serve until unmounted; ``ready(None)``
    once mounted.

    Raises MountError (after calling ``ready`` with its message) when the bucket
    cannot be mounted.
    """
    try:
        store = ObjectStore(config.store_settings)
        await trio.to_thread.run_sync(check_mountable, config.store_settings, config.prefix)
    except MountError as exc:
        ready(str(exc))
        raise
    tune_malloc_for_read_buffers()
    limits = Limits.of(config)
    async with trio.open_nursery() as background:
        core, opened, report = await _open_mount(config, store, limits, background)
        try:
            pyfuse3.init(FuseOperations(config, core), str(config.mountpoint), fuse_options(config))
        except RuntimeError as exc:
            message = f"cannot mount on {config.mountpoint}: {exc}"
            ready(message)
            raise MountError(message) from None
        record = write_record(config)  # for cwfs warm
        try:
            _start_reporting(config, report, background)
            background.start_soon(
                _terminate_on_signal,
                config.unmount_timeout,
                config.cache_dir or default_cache_base(),
                record,
                core.report_unfinished,
            )
            lota = any(bucket.using_lota for bucket in opened)  # for one bucket: known now
            background.start_soon(_finish_mount, config, ready, lota)
            await pyfuse3.main(max_tasks=config.fuse_tasks)
        finally:
            notify.stopping(f"unmounting {config.mountpoint}")
            background.cancel_scope.cancel()
            not_uploaded = await core.abandon_open_files()
            if record is not None:
                record.unlink(missing_ok=True)
            pyfuse3.close(unmount=True)
            log.info(
                "unmounted %s (read-ahead memory peaked at %d bytes)",
                config.mountpoint,
                limits.memory.peak,
            )
            for bucket in opened:
                bucket.close()
    return EXIT_KEPT if not_uploaded else 0


def _start_reporting(config: Config, report: Report, nursery: trio.Nursery) -> None:
    """Statistics from now on: for ``cwfs stats``, on SIGUSR1, and with
    ``--metrics-port`` for Prometheus; all stop when ``nursery`` is cancelled."""
    nursery.start_soon(serve_statistics, report)
    nursery.start_soon(_log_statistics_on_signal, report)
    if config.metrics_port is not None:
        nursery.start_soon(_serve_metrics, config.metrics_port, report)


async def _log_statistics_on_signal(report: Report) -> None:
    with trio.open_signal_receiver(signal.SIGUSR1) as signals:
        async for _ in signals:
            log.info("statistics (SIGUSR1):\n%s", render(report.snapshot()))


async def _serve_metrics(listen: tuple[str, int], report: Report) -> None:
    """Serve ``/metrics`` until cancelled. A port that cannot be had is logged, and the
    mount goes on without it."""
    try:
        server = serve_metrics(listen, report)
    except OSError as exc:
        log.error("cannot serve metrics on %s:%d: %s", *listen, exc)
        return
    try:
        await trio.sleep_forever()
    finally:  # a scrape in flight waits for the trio thread: shut down off it
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.shutdown)


async def _after_earlier_mounts(config: Config, store: ObjectStore, cache_dir: Path) -> None:
    """Report the data earlier mounts of the bucket kept (in this cache directory and in
    private ones of mounts that are gone), and abort the multipart uploads they left open.
    """
    directories = cache_directories(config.bucket, cache_dir)
    kept = await trio.to_thread.run_sync(find_kept, directories, config.bucket)
    if kept:
        log.warning(
            "earlier mounts of bucket %r kept data they could not upload, %s, in %s; "
            "`cwfs recover %s` lists it, `cwfs recover --upload %s` uploads what is current",
            config.bucket,
            summary(kept),
            ", ".join(sorted({str(k.path.parent) for k in kept})),
            config.bucket,
            config.bucket,
        )
    for stale in find_stale_uploads(directories, config.bucket):
        if stale.endpoint == config.endpoint:
            await abort_stale(store, stale)
    for directory in directories:
        if directory != cache_dir:
            remove_stale_locks(directory)


async def _finish_mount(config: Config, ready: Callable[[str | None], None], lota: bool) -> None:
    """Once the kernel has completed the FUSE handshake, tune it and report ready (to
    the caller and to systemd).

    The kernel sends no other request before the handshake is complete, so a stat of
    the mount point (served by this process, from a worker thread) returns only after
    it: from then on the read-ahead raised here stays, and so it is in place before
    any reader could start.
    """
    try:
        root = await trio.to_thread.run_sync(os.stat, config.mountpoint)
    except OSError as exc:
        log.warning("stat of the mount point failed: %s", exc)
    else:
        _raise_kernel_read_ahead(root.st_dev)
    what = f"bucket {config.bucket}" if config.bucket else "every bucket"
    log.info(
        "mounted %s%s from %s on %s",
        what,
        f" (prefix {config.prefix!r})" if config.prefix else "",
        config.endpoint,
        config.mountpoint,
    )
    ready(None)
    reads = ("on" if lota else "off") if config.bucket else f"{config.lota}, per bucket"
    notify.ready(f"mounted {what} from {config.endpoint} on {config.mountpoint}, LOTA {reads}")


def _raise_kernel_read_ahead(device: int) -> None:
    """Raise the mount's kernel read-ahead from its FUSE default of 128 KiB to 2 MiB.

    A sequential reader then sends 1 MiB reads (the FUSE maximum) instead of 128 KiB
    ones: eight times fewer requests, and less than half the CPU per GiB. And from
    2 MiB, the kernel reads a lone 1 MiB read as it is instead of tripling it. The
    setting lives in sysfs, for the mount's device; only root may change it. The
    kernel resets it when it completes the FUSE handshake, so it is set after that.
    """
    try:
        Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb").write_text(
            str(KERNEL_READ_AHEAD_KB)
        )
    except OSError as exc:
        log.debug("kernel read-ahead left at its default: %s", exc)


def _remove_if_empty(directory: Path) -> None:
    """Remove the mount's private staging directory unless it keeps uncommitted data."""
    try:
        directory.rmdir()
    except OSError:
        log.warning(
            "%s still holds data that could not be uploaded; `cwfs recover` lists it", directory
        )
