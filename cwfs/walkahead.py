"""Walk-ahead: the next directories of a recursive walk listed before the walk gets there.

``find``, ``du``, ``rsync`` and ``tar`` read a directory's subdirectories one after
another, in the order its listing gave them; each one not yet known costs a
ListObjectsV2 round trip that the walk waits for, while the mount and the server take
turns being idle. When a directory is listed shortly after the sibling before it, a
walk is under way and the next `WINDOW` sibling directories are listed in the
background, their first page each (`Namespace` does that, and keeps them from being
listed twice): the walk finds their listings cached or in flight. A directory listed
alone (``ls``, ``cd``) starts nothing, nor does listing the same one again. A walk
slower than that (a step between siblings longer than the metadata TTL) is not listed
ahead: the listings would expire before it got there, and be sent twice.

This decides only what to list; it holds a parent's subdirectory names (its listing's
order) while a walk goes through them, for `RECENT` parents at most.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cachetools import TTLCache

from cwfs.listing import join

WINDOW = 2  # sibling directories listed ahead of a walk
RECENT = 64  # parents whose walks are followed


class WalkAhead:
    """Follows which directories are listed, and calls ``start(path)`` for the next ones."""

    def __init__(
        self, start: Callable[[str], None], timer: Callable[[], float], window: float, ttl: float
    ) -> None:
        self._start = start
        self._timer = timer
        self._ttl = ttl
        # parent -> the child listed last, and when
        self._last: TTLCache[str, tuple[str, float]] = TTLCache(RECENT, window, timer)
        # parent -> its subdirectories in listing order, and each one's position
        self._order: TTLCache[str, tuple[Sequence[str], dict[str, int]]] = TTLCache(
            RECENT, window, timer
        )

    def listed(self, path: str, subdirectories: Callable[[str], Sequence[str] | None]) -> None:
        """Directory ``path`` is being listed; ``subdirectories(parent)`` names the
        directories in ``parent`` in listing order, if its listing is known."""
        if not path:
            return
        parent, _, name = path.rpartition("/")
        now = self._timer()
        previous, then = self._last.get(parent, ("", now))
        self._last[parent] = (name, now)
        step = now - then  # siblings the TTL covers at this pace (any, when indefinite)
        ahead = WINDOW if step <= 0 else int(min(WINDOW, self._ttl / step))
        if not previous or previous == name or ahead == 0:
            return
        order = self._order.get(parent)
        if order is None or name not in order[1]:
            names = subdirectories(parent)
            if names is None:
                return
            order = self._order[parent] = (names, {n: i for i, n in enumerate(names)})
        names, position = order
        here, before = position.get(name), position.get(previous)
        if here is None or before is None or not 0 < here - before <= WINDOW + 1:
            return  # not the walk's next directory
        for sibling in names[here + 1 : here + 1 + ahead]:
            self._start(join(parent, sibling))
