"""One memory budget for every read-ahead buffer of the mount.

Prefetchers take bytes from it before they fetch and give them back when the data is
consumed or dropped. Read-ahead only takes what is free, so more readers mean smaller
windows, never more memory. Demand reads (at most one kernel request each, gone once
answered) are outside it: made to wait for memory that only other waiting readers
could free, they would wait forever.
"""

from __future__ import annotations

import ctypes
import logging


log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt(3)
ARENA_MAX = 2


def return_freed_buffers_to_the_os() -> None:
    """Let glibc keep at most two malloc arenas.

    Read-ahead buffers come and go by the megabyte from many worker threads. By
    default glibc gives each thread an arena of its own and keeps what is freed there,
    so the process stays far above what the budget holds (16 readers under a 64 MiB
    budget peaked 170 MiB above the baseline). Two shared arenas reuse freed buffers
    across threads, keeping RSS within the budget plus a constant.
    """
    try:
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, ARENA_MAX)
    except (OSError, AttributeError):
        log.debug("mallopt is not available: freed read buffers may stay in the process")


class MemoryBudget:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.peak = 0
        self.readers = 0  # sequential readers currently sharing the budget

    def try_take(self, size: int) -> bool:
        """Take ``size`` bytes if they are free now."""
        if self.used + size > self.limit:
            return False
        self._add(size)
        return True

    def give(self, size: int) -> None:
        self.used -= size

    def share(self) -> int:
        """The read-ahead window one sequential reader may use now."""
        return self.limit // max(1, self.readers)

    def _add(self, size: int) -> None:
        self.used += size
        self.peak = max(self.peak, self.used)
