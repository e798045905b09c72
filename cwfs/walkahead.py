"""Walk-ahead: the next directories of a recursive walk listed before the walk gets there.

``find``, ``du``, ``rsync`` and ``tar`` read a directory's subdirectories one after
another, in the order its listing gave them; each one not yet known costs a
ListObjectsV2 round trip that the walk waits for, while the mount and the server take
turns being idle. When a directory is listed shortly after the sibling before it, a
walk is under way and the next `WINDOW` sibling directories are listed in the
background, their first page each (`Namespace` does that, and keeps them from being
listed twice): the walk finds their listings cached or in flight. A directory listed
alone (``ls``, ``cd``) starts nothing, nor does listing the same one again.

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
        self, start: Callable[[str], None], timer: Callable[[], float], window: float
    ) -> None:
        self._start = start
        self._last: TTLCache[str, str] = TTLCache(RECENT, window, timer)  # parent -> child
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
        previous = self._last.get(parent)
        self._last[parent] = name
        if previous is None or previous == name:
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
        for sibling in names[here + 1 : here + 1 + WINDOW]:
            self._start(join(parent, sibling))
