"""Fault injection: make chosen requests fail with a chosen S3 error.

Tests use it to exercise throttling (503 SlowDown), quota ("The account is write
suspended.") and failures midway through a multi-request operation (``after``). A rule
with ``phase="after"`` lets the request take effect and only then answers the error: a
response lost in transit, so that a client's retry meets the result of its own first
attempt (e.g. 412 on an ``If-None-Match: *`` retry). ``delay`` holds the request that
many seconds before answering: a server that stalls. A rule with ``phase="slow"``
answers normally but waits ``delay`` seconds before each chunk of the response body:
a slow link, on which a client that stops reading midway can be seen doing so.
``phase="cut"`` sends ``cut_at`` bytes of the body and drops the connection;
``phase="reset"`` drops it before the request is carried out (an outage).
``rate`` below 1 makes a rule fire on that fraction of its matching requests, drawn
from a generator seeded with ``seed``: a soak's background of faults, reproducible.
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from .responses import S3Error

#: When a fault fires: instead of the operation, after it took effect, or (slow) while
#: its response body is sent.
PHASES = ("before", "after", "slow", "cut", "reset")


class InjectedFault(S3Error):
    """An error answered because a fault rule fired (logged as such)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        phase: str,
        delay: float = 0.0,
        cut_at: int = 0,
    ) -> None:
        super().__init__(status, code, message)
        self.phase = phase
        self.delay = delay
        self.cut_at = cut_at

    @property
    def logged_as(self) -> bool | str:
        """The request log's ``fault`` value: True for a refused request, else ``"after"``."""
        return True if self.phase == "before" else self.phase


@dataclass
class FaultRule:
    """One rule; ``times`` = -1 fails forever, ``after`` lets the first N matches through,
    ``phase`` is ``"before"`` (refuse the request) or ``"after"`` (carry it out, then fail)."""

    op: str | None = None
    endpoint: str | None = None
    key_prefix: str | None = None
    bucket: str | None = None
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    times: int = 1
    after: int = 0
    phase: str = "before"
    delay: float = 0.0
    cut_at: int = 0  # phase "cut": body bytes sent before the connection drops
    rate: float = 1.0  # the fraction of matching requests it fires on (seeded draws)
    seed: int = 0
    id: int = 0
    matched: int = field(default=0)
    fired: int = field(default=0)

    def applies(self, op: str, endpoint: str, bucket: str | None, key: str | None) -> bool:
        if self.op not in (None, "*", op) or self.endpoint not in (None, endpoint):
            return False
        if self.bucket is not None and self.bucket != bucket:
            return False
        return self.key_prefix is None or (key or "").startswith(self.key_prefix)


class SlowBody:
    """A response body handed over a chunk every ``delay`` seconds."""

    def __init__(self, body: Iterable[bytes], delay: float) -> None:
        self._body, self._delay = body, delay

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._body:
            time.sleep(self._delay)
            yield chunk

    def close(self) -> None:
        close = getattr(self._body, "close", None)
        if close is not None:
            close()


class CutBody(SlowBody):
    """A response body that stops after ``cut_at`` bytes: the connection drops midway
    (the server closes it, as a reset between the store and the client would)."""

    def __init__(self, body: Iterable[bytes], cut_at: int, connection: socket.socket) -> None:
        super().__init__(body, 0.0)
        self._cut_at = cut_at
        self._connection = connection

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self._body:
            if sent + len(chunk) >= self._cut_at:
                yield chunk[: self._cut_at - sent]
                break
            sent += len(chunk)
            yield chunk
        # The bytes yielded are written by now; the client then sees the connection end.
        self._connection.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError(f"fault: body cut after {self._cut_at} bytes")


class ResetBody:
    """No answer at all: the connection drops before the request is carried out, as
    when the store or the network between is down."""

    def __init__(self, connection: socket.socket) -> None:
        self._connection = connection

    def __iter__(self) -> ResetBody:
        return self

    def __next__(self) -> bytes:
        self._connection.shutdown(socket.SHUT_RDWR)
        raise ConnectionAbortedError("fault: connection reset, request not carried out")


class FaultInjector:
    """Holds the rules and decides, per request, whether one of them fires."""

    _FIELDS = {
        "op",
        "endpoint",
        "key_prefix",
        "bucket",
        "status",
        "code",
        "message",
        "times",
        "after",
        "phase",
        "delay",
        "cut_at",
        "rate",
        "seed",
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1
        self._draws: dict[int, random.Random] = {}  # per rule with a rate below 1

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Add a rule from its JSON form; unknown fields are an error (typos fail loudly)."""
        unknown = set(spec) - self._FIELDS
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        if spec.get("phase", "before") not in PHASES:
            raise ValueError(f"fault rule phase must be one of {PHASES}, not {spec['phase']!r}")
        if not 0.0 <= float(spec.get("rate", 1.0)) <= 1.0:
            raise ValueError(f"fault rule rate must be within 0..1, not {spec['rate']!r}")
        with self._lock:
            rule = FaultRule(**spec, id=self._next_id)
            self._next_id += 1
            self._rules.append(rule)
            self._draws[rule.id] = random.Random(rule.seed)
            return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()
            self._draws.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]

    def check(
        self, op: str, endpoint: str, bucket: str | None, key: str | None
    ) -> InjectedFault | None:
        """The error to answer with, if a rule fires for this request (first rule wins)."""
        with self._lock:
            for rule in self._rules:
                if not rule.applies(op, endpoint, bucket, key):
                    continue
                rule.matched += 1
                if rule.matched <= rule.after or (0 <= rule.times <= rule.fired):
                    continue
                if rule.rate < 1.0 and self._draws[rule.id].random() >= rule.rate:
                    continue
                rule.fired += 1
                return InjectedFault(
                    rule.status, rule.code, rule.message, rule.phase, rule.delay, rule.cut_at
                )
        return None
