"""Exact attributes of object versions this machine wrote or looked up, kept across mounts.

Listings carry no user metadata, so a file known only from a listing would show its
Last-Modified time and the mount's file mode, even one this mount just chmod'ed. For
every object version whose mtime and mode we know exactly (our own upload, ``chmod``,
``touch``, a HeadObject), this remembers them under its key and ETag; a listing that
shows the same ETag gets them back, with no request. A different ETag is another
writer's version: the listing wins.

They are kept in memory (bounded) and in a small SQLite file under the user's cache
directory, keyed by endpoint, bucket and key, so that a later mount of the same bucket
knows them too. Two mounts may share the file (WAL, a busy timeout). The file is only
ever a cache: one that cannot be opened or read is set aside and rebuilt empty, and
writing it is batched in a worker thread (`flush`), never on the trio thread.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from cachetools import LRUCache

from cwfs.attrs import Attrs

log = logging.getLogger(__name__)

MAX_ROWS = 1_000_000  # about 150 MB of file at most
PRUNE_TO = MAX_ROWS * 9 // 10
# Rows written between two counts of the table (a count reads all of it): the file
# holds at most MAX_ROWS plus this many per mount sharing it.
CHECK_EVERY = 10_000
BATCH_DELAY = 0.5  # seconds between writes of the file at most
BUSY_TIMEOUT_MS = 5000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS attributes_v1 (
    endpoint TEXT NOT NULL, bucket TEXT NOT NULL, key TEXT NOT NULL,
    etag TEXT NOT NULL, mtime_ns INTEGER NOT NULL, mode INTEGER, uid INTEGER, gid INTEGER,
    special INTEGER NOT NULL, used INTEGER NOT NULL,
    PRIMARY KEY (endpoint, bucket, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS attributes_v1_used ON attributes_v1 (used);
"""


@dataclass(frozen=True)
class Known:
    """The exact attributes of one object version."""

    etag: str
    mtime_ns: int
    mode: int | None
    uid: int | None = None
    gid: int | None = None
    special: int = 0


def known_of(attrs: Attrs, etag: str) -> Known:
    """What to remember of a version whose attributes are known exactly."""
    return Known(etag, attrs.mtime_ns, attrs.mode, attrs.uid, attrs.gid, attrs.special)


class AttrStore:
    """What this machine knows exactly of one bucket's objects, by key and ETag."""

    def __init__(self, path: Path | None, endpoint: str, bucket: str, entries: int) -> None:
        self._scope = (endpoint, bucket)
        self._memory: LRUCache[str, Known] = LRUCache(entries)
        self._pending: dict[str, Known] = {}
        self._unchecked = CHECK_EVERY  # rows written since the table was last counted
        self._lock = threading.Lock()  # one worker thread at a time uses the connection
        self._path = path
        self._db = self._open(path) if path is not None else None
        self.changed = trio.Event()  # set when something waits to be written

    def recall(self, key: str, etag: str | None) -> Known | None:
        """The exact attributes of ``key`` if it still has ``etag``."""
        known = self._memory.get(key)
        return known if known is not None and etag is not None and known.etag == etag else None

    def remember(self, key: str, known: Known) -> None:
        self._memory[key] = known
        if self._db is not None:
            self._pending[key] = known
            self.changed.set()

    def load(self, keys: Iterable[str]) -> None:
        """Bring what the file knows of ``keys`` (one listing page, in key order) into memory.

        Blocking: call it in a worker thread. One query covers the page's key range.
        """
        wanted = [k for k in keys if k not in self._memory]
        if self._db is None or not wanted:
            return
        query = (
            "SELECT key, etag, mtime_ns, mode, uid, gid, special FROM attributes_v1"
            " WHERE endpoint = ? AND bucket = ? AND key BETWEEN ? AND ?"
        )
        rows = self._run(query, (*self._scope, min(wanted), max(wanted)))
        names = set(wanted)
        for key, etag, mtime_ns, mode, uid, gid, special in rows:
            if key in names and key not in self._memory:
                self._memory[key] = Known(etag, mtime_ns, mode, uid, gid, special)

    def flush(self) -> None:
        """Write what was remembered since the last flush. Blocking: a worker thread."""
        if self._db is None or not self._pending:
            return
        batch, self._pending = self._pending, {}
        now = int(time.time())
        rows = [
            (*self._scope, k, v.etag, v.mtime_ns, v.mode, v.uid, v.gid, v.special, now)
            for k, v in batch.items()
        ]
        insert = "INSERT OR REPLACE INTO attributes_v1 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        self._run(insert, rows, many=True)
        self._unchecked += len(rows)
        if self._unchecked >= CHECK_EVERY:
            self._unchecked = 0
            self._prune()

    def _prune(self) -> None:
        """Hold the file to `MAX_ROWS`, dropping the rows used least lately."""
        count = self._run("SELECT count(*) FROM attributes_v1", ())
        if count and count[0][0] > MAX_ROWS:
            excess = count[0][0] - PRUNE_TO
            oldest = "SELECT endpoint, bucket, key FROM attributes_v1 ORDER BY used LIMIT ?"
            self._run(
                f"DELETE FROM attributes_v1 WHERE (endpoint, bucket, key) IN ({oldest})", (excess,)
            )

    def close(self) -> None:
        if self._db is not None:
            self.flush()
            with self._lock:
                self._db.close()
            self._db = None

    def _open(self, path: Path) -> sqlite3.Connection | None:
        """The attribute file, created if missing, rebuilt empty if it is unusable."""
        for attempt in range(2):
            try:
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.executescript(_SCHEMA)
                db.execute("SELECT count(*) FROM attributes_v1 WHERE key = ''").fetchall()
                return db
            except sqlite3.DatabaseError as exc:
                if attempt:
                    log.warning("cannot use %s (%s): attributes are kept in memory only", path, exc)
                    return None
                self._set_aside(path, exc)
            except OSError as exc:
                log.warning("cannot open %s (%s): attributes are kept in memory only", path, exc)
                return None
        return None

    @staticmethod
    def _set_aside(path: Path, exc: Exception) -> None:
        log.warning("%s is unusable (%s): starting it again, empty", path, exc)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    def _run(self, sql: str, params: Sequence[Any], many: bool = False) -> list[Any]:
        """One statement; a broken file is rebuilt and the statement's work dropped."""
        with self._lock:
            if self._db is None:
                return []
            try:
                with self._db:
                    if many:
                        return self._db.executemany(sql, params).fetchall()
                    return self._db.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                log.warning("attribute file busy or failing (%s): skipped", exc)
                return []
            except sqlite3.DatabaseError as exc:
                self._db.close()
                assert self._path is not None
                self._set_aside(self._path, exc)
                self._db = self._open(self._path)
                return []


async def keep_written(store: AttrStore) -> None:
    """Write what ``store`` remembers to its file as it comes, and all of it at the end.

    Runs in the mount's background nursery; waits on an event rather than a timer, so a
    test's mock clock never jumps for it.
    """
    try:
        while True:
            await store.changed.wait()
            # Gather a batch first: one write per answer, under stat-ahead, kept a thread
            # busy beside the trio thread. Real time, in a thread: no trio deadline, so a
            # test's mock clock never jumps for it.
            await trio.to_thread.run_sync(time.sleep, BATCH_DELAY, abandon_on_cancel=True)
            store.changed = trio.Event()
            await trio.to_thread.run_sync(store.flush)
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)
