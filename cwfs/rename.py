"""Renaming objects: one atomic RenameObject where the bucket allows it, else copy + delete.

CoreWeave's RenameObject remaps a key in one request, whatever its size, and readers
see the source or the destination, never both. It is refused on buckets that have ever
had versioning: there (``--rename-mode copy``, or ``auto`` once the bucket is known to
be versioned or the store refuses a rename) a rename is a server-side copy followed by
a delete, which is not atomic; that is logged once. A directory is a prefix: renaming
it renames every object below it, in parallel, its marker last. That is not atomic as
a whole, but each object is always under exactly one of its two names.
"""

from __future__ import annotations

import functools
import logging
import time
import uuid

import trio

from cwfs.errors import RenameUnsupported, StoreError, Unsupported
from cwfs.store import ObjectInfo, ObjectStore, WriteCondition
from cwfs.tasks import gather
from cwfs.upload import Uploader

log = logging.getLogger(__name__)

PROGRESS_EVERY = 5.0  # seconds between progress lines of a large directory rename


class Renamer:
    def __init__(
        self, store: ObjectStore, uploader: Uploader, mode: str, versioned: bool, concurrency: int
    ) -> None:
        self._store = store
        self._uploader = uploader
        self._mode = mode
        self._can_rename = not versioned  # False once the bucket is known to refuse RenameObject
        self._limiter = trio.CapacityLimiter(concurrency)
        if versioned and mode == "auto":
            log.warning(
                "the bucket has had versioning, so it cannot use RenameObject: renames are copy + delete, not atomic"
            )

    @property
    def atomic(self) -> bool:
        """Whether renames use RenameObject (as far as we know now)."""
        return self._mode == "atomic" or (self._mode == "auto" and self._can_rename)

    async def rename(
        self, source: str, dest: str, size: int, etag: str | None, no_replace: bool = False
    ) -> str | None:
        """Move one object; returns the destination's ETag when it changed (copies)."""
        if self._mode == "atomic" and not self._can_rename:
            raise Unsupported(
                "the bucket has had versioning (no RenameObject) and --rename-mode is atomic",
                op="RenameObject",
                key=source,
                code="VersionedBucket",
            )
        if self.atomic:
            try:
                await self._store.rename_object(source, dest, no_replace, uuid.uuid4().hex)
                return None
            except RenameUnsupported as exc:
                if self._mode == "atomic":
                    why = (
                        f"the store refused RenameObject and --rename-mode is atomic: {exc.message}"
                    )
                    raise exc.retyped(RenameUnsupported, why) from None
                self._can_rename = False
                log.warning(
                    "the store refused RenameObject (%s): "
                    "renames are copy + delete from now on, not atomic",
                    exc,
                )
        condition = WriteCondition(None) if no_replace else None
        new_etag = await self._uploader.copy(source, dest, size, etag, None, condition)
        await self._store.delete_object(source)
        return new_etag

    async def rename_tree(self, source_prefix: str, dest_prefix: str) -> int:
        """Move every object below ``source_prefix`` under ``dest_prefix``; the marker last.

        Returns how many objects moved. Safe to repeat after a failure: what already
        moved is no longer below the source.
        """
        objects = [info async for info in self._store.list_all(source_prefix)]
        marker = next((o for o in objects if o.key == source_prefix), None)
        contents = [o for o in objects if o.key != source_prefix]
        moved = 0
        last_report = time.monotonic()

        async def move(info: ObjectInfo) -> None:
            nonlocal moved, last_report
            await self.rename(
                info.key, dest_prefix + info.key[len(source_prefix) :], info.size, info.etag
            )
            moved += 1
            if time.monotonic() - last_report >= PROGRESS_EVERY:
                last_report = time.monotonic()
                log.info(
                    "renaming %r to %r: %d of %d objects moved",
                    source_prefix,
                    dest_prefix,
                    moved,
                    len(objects),
                )

        try:
            await gather(
                [functools.partial(move, info) for info in contents], limiter=self._limiter
            )
            if marker is not None:
                await move(marker)
        except StoreError as exc:
            why = (
                f"renaming {source_prefix!r} to {dest_prefix!r} stopped after {moved} of "
                f"{len(objects)} objects ({exc.message}); every object is under one of the two "
                "names: repeat the same rename to finish it"
            )
            raise exc.retyped(StoreError, why) from None
        if len(objects) > 100:
            log.info("renamed %r to %r: %d objects", source_prefix, dest_prefix, len(objects))
        return moved
