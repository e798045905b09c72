"""Stat-ahead: with ``--exact-metadata``, HeadObject for a directory's entries as it is read.

``ls -l`` reads a directory, then stats each entry, one at a time. A file known only
from a listing costs a HeadObject there (its mtime and mode are user metadata, which
listings lack), so each ``stat`` would wait a round trip. Once a batch of entries has
been listed, their HeadObjects are queued and sent in the background in listing order,
a bounded number at once, so the ``stat`` that comes next finds its answer ready or in
flight (as Lustre's statahead does). A ``stat`` that comes first takes its entry out of
the queue and sends the request itself (`take`), rather than waiting behind the queue
or listing the directory again because the listing's entries have expired meanwhile.
An answer waits for its ``stat`` up to `READY_WINDOW` even when that is longer than the
metadata TTL (`answer`): ahead of a slow reader, answers would otherwise expire unused
and each ``stat`` cost the same request again. Failures are left for that ``stat`` to
meet and report.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

import trio
from cachetools import TTLCache

from cwfs.attrs import Attrs
from cwfs.errors import FsError

log = logging.getLogger(__name__)

CONCURRENCY = 32  # HeadObjects in flight for stat-ahead, over all directories
READY_WINDOW = 30.0  # seconds an answer waits for its stat (a long `ls -l`)
READY_ENTRIES = 100_000

Answer = tuple[int, Attrs | None]
"""What stat-ahead learnt of a path: the change-log generation when its request was
sent, and the attributes (None: gone)."""


class StatAhead:
    """Sends ``head(path, attrs)`` for listed files whose attributes are not exact."""

    def __init__(
        self,
        head: Callable[[str, Attrs], Awaitable[Answer | None]],
        nursery: trio.Nursery,
        timer: Callable[[], float],
        concurrency: int = CONCURRENCY,
    ) -> None:
        self._head = head
        self._nursery = nursery
        self._concurrency = concurrency
        self._queued: dict[str, Attrs] = {}  # in listing order
        self._running: dict[str, Attrs] = {}
        self._workers = 0
        self._answers: TTLCache[str, Answer] = TTLCache(READY_ENTRIES, READY_WINDOW, timer)

    def start(self, entries: Iterable[tuple[str, Attrs]]) -> None:
        """``entries`` are (path, attributes) a listing just delivered."""
        for path, attrs in entries:
            if not attrs.exact and path not in self._running:
                self._queued[path] = attrs
                self._answers.pop(path, None)
        while self._queued and self._workers < self._concurrency:
            self._workers += 1
            self._nursery.start_soon(self._work)

    def take(self, path: str) -> Attrs | None:
        """The listed attributes of ``path`` if its HeadObject is queued or running; a
        queued one leaves the queue, for the caller to send now."""
        return self._queued.pop(path, None) or self._running.get(path)

    def answer(self, path: str) -> Answer | None:
        """The answer stat-ahead found for ``path``, once (then the cache keeps it)."""
        return self._answers.pop(path, None)

    async def _work(self) -> None:
        try:
            while self._queued:
                path = next(iter(self._queued))
                attrs = self._running[path] = self._queued.pop(path)
                try:
                    if (answer := await self._head(path, attrs)) is not None:
                        self._answers[path] = answer
                except FsError as exc:
                    log.debug("stat-ahead of %r failed: %s", path, exc)
                finally:
                    del self._running[path]
        finally:
            self._workers -= 1
