"""Stat-ahead: with ``--exact-metadata``, HeadObject for a directory's entries as it is read.

``ls -l`` reads a directory, then stats each entry, one at a time. A file known only
from a listing costs a HeadObject there (its mtime and mode are user metadata, which
listings lack), so each ``stat`` would wait a round trip. Once a batch of entries has
been listed, their HeadObjects start in the background, a bounded number at once, so
the ``stat`` that comes next finds its answer ready or in flight (as Lustre's
statahead does). Failures are left for that ``stat`` to meet and report.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable

import trio

from cwfs.attrs import Attrs
from cwfs.errors import FsError
from cwfs.tasks import gather

log = logging.getLogger(__name__)

CONCURRENCY = 32  # HeadObjects in flight for stat-ahead, over all directories


class StatAhead:
    """Starts ``head(path, attrs)`` for listed files whose attributes are not exact."""

    def __init__(
        self, head: Callable[[str, Attrs], Awaitable[object]], nursery: trio.Nursery
    ) -> None:
        self._head = head
        self._nursery = nursery
        self._limiter = trio.CapacityLimiter(CONCURRENCY)

    def start(self, entries: Iterable[tuple[str, Attrs]]) -> None:
        """``entries`` are (path, attributes) a listing just delivered."""
        wanted = [(path, attrs) for path, attrs in entries if not attrs.exact]
        if wanted:
            self._nursery.start_soon(self._run, wanted)

    async def _run(self, wanted: list[tuple[str, Attrs]]) -> None:
        calls = [functools.partial(self._quietly, path, attrs) for path, attrs in wanted]
        await gather(calls, limiter=self._limiter)

    async def _quietly(self, path: str, attrs: Attrs) -> None:
        try:
            await self._head(path, attrs)
        except FsError as exc:
            log.debug("stat-ahead of %r failed: %s", path, exc)
