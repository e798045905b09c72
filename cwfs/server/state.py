"""Everything the endpoints of one server process share: store, lock, counters, rules."""
from __future__ import annotations

import threading
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
    stats: RequestStats = field(init=False)

    def __post_init__(self) -> None:
        self.stats = RequestStats(self.endpoints)
