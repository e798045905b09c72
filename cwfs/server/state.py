"""Everything the endpoints of one server process share: store, lock, counters, rules."""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from moto.s3.models import S3Backend

from .backend import s3_backend
from .conditional import InFlightWrites
from .faults import FaultInjector
from .ops import DEFAULT_VHOST_SUFFIXES
from .rename import ClientTokens
from .stats import RequestStats

DEFAULT_ACCESS_KEY = "cwfs-demo"
DEFAULT_SECRET_KEY = "cwfs-demo-secret"


class KeyedLocks:
    """One lock per key, created on demand and dropped when free.

    UploadParts run in parallel; only two uploads of the same part must not interleave
    between moto storing the part and us recording its checksum on it.
    """

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    @contextmanager
    def hold(self, key: Hashable) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


@dataclass
class ServerState:
    """Shared state. ``lock`` serialises every mutation (and listings, which moto cannot
    run safely while keys are added), which is what makes renames and conditional
    writes atomic."""

    endpoints: list[str]
    access_key: str = DEFAULT_ACCESS_KEY
    secret_key: str = DEFAULT_SECRET_KEY
    vhost_suffixes: tuple[str, ...] = DEFAULT_VHOST_SUFFIXES
    backend: S3Backend = field(default_factory=s3_backend)
    lock: threading.RLock = field(default_factory=threading.RLock)
    inflight: InFlightWrites = field(default_factory=InFlightWrites)
    tokens: ClientTokens = field(default_factory=ClientTokens)
    faults: FaultInjector = field(default_factory=FaultInjector)
    part_locks: KeyedLocks = field(default_factory=KeyedLocks)
    stats: RequestStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = RequestStats(self.endpoints)
