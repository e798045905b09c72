"""Run one mount: check the bucket, mount, serve FUSE requests until unmounted or signalled."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from collections.abc import Callable

import pyfuse3
import trio

from cwfs.config import Config
from cwfs.fs import Filesystem
from cwfs.metacache import MetadataCache
from cwfs.namespace import Namespace
from cwfs.rename import Renamer
from cwfs.staging import StagingArea, create_cache_dir
from cwfs.store import MountError, ObjectStore
from cwfs.upload import Uploader

log = logging.getLogger(__name__)


def fuse_options(config: Config) -> set[str]:
    options = set(pyfuse3.default_options)
    options |= {f"fsname=cwfs:{config.bucket}", "subtype=cwfs"}
    if config.read_only:
        options.add("ro")
    if config.allow_other:
        options.add("allow_other")
    return options


async def _terminate_on_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, unmounting", signal.Signals(signum).name)
            pyfuse3.terminate()
            return


async def serve(config: Config, ready: Callable[[str | None], None]) -> None:
    """Mount ``config.bucket`` and serve until unmounted; ``ready(None)`` once mounted.

    Raises MountError (after calling ``ready`` with its message) when the bucket
    cannot be mounted.
    """
    try:
        store = ObjectStore(config)
        await trio.to_thread.run_sync(store.check_mountable)
        cache = MetadataCache(config.metadata_ttl, config.negative_ttl, config.metadata_cache_entries)
        cache_dir, private = create_cache_dir(config.cache_dir, config.bucket)
        uploader = Uploader(store, config.part_size, config.upload_concurrency, config.checksum, config.conflict_retries)
        versioned = not config.read_only and config.rename_mode != "copy" and await store.versioning_status() is not None
        renamer = Renamer(store, uploader, config.rename_mode, versioned, config.max_concurrency)
        staging = StagingArea(cache_dir, config.cache_limit)
        filesystem = Filesystem(config, Namespace(store, cache, config.prefix), staging, uploader, renamer)
        try:
            pyfuse3.init(filesystem, str(config.mountpoint), fuse_options(config))
        except RuntimeError as exc:
            raise MountError(f"cannot mount on {config.mountpoint}: {exc}") from None
    except MountError as exc:
        ready(str(exc))
        raise
    try:
        log.info("mounted bucket %r%s from %s on %s", config.bucket, f" (prefix {config.prefix!r})" if config.prefix else "", config.endpoint, config.mountpoint)
        ready(None)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_terminate_on_signal)
            await pyfuse3.main(max_tasks=config.fuse_tasks)
            nursery.cancel_scope.cancel()
    finally:
        pyfuse3.close(unmount=True)
        log.info("unmounted %s", config.mountpoint)
        if private:
            _remove_if_empty(cache_dir)


def _remove_if_empty(directory: Path) -> None:
    """Remove the mount's private staging directory unless it keeps uncommitted data."""
    try:
        directory.rmdir()
    except OSError:
        log.warning("%s still holds data that could not be uploaded; it is kept", directory)
