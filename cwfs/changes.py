"""Our own changes, numbered, so that an answer requested before one can be told apart.

A listing or HeadObject sent before one of our uploads completed may arrive after it,
describing the old version (its old ETag). Applied, it would make the next conditional
request fail with ESTALE of our own making. Each change this mount makes gets the next
number; a request notes the number when it starts, and when its answer comes back, the
names changed since are left as we know them.
"""

from __future__ import annotations

from collections import deque

KEEP = 100_000  # changes remembered; an answer older than that is not cached at all


class ChangeLog:
    """The paths this mount changed, in order."""

    def __init__(self, keep: int = KEEP) -> None:
        self.generation = 0
        self._log: deque[tuple[int, str]] = deque(maxlen=keep)

    def record(self, path: str) -> None:
        self.generation += 1
        self._log.append((self.generation, path))

    def since(self, generation: int) -> set[str] | None:
        """The paths changed after ``generation``; None when the log no longer reaches back."""
        if generation == self.generation:
            return set()
        if not self._log or self._log[0][0] > generation + 1:
            return None
        changed: set[str] = set()
        for number, path in reversed(self._log):
            if number <= generation:
                break
            changed.add(path)
        return changed


def touched(path: str, changed: set[str]) -> bool:
    """Whether ``path``, or a directory above it, is among ``changed``."""
    while True:
        if path in changed:
            return True
        if not path:
            return False
        path = path.rpartition("/")[0]
