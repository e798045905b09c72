"""Fault injection: make chosen requests fail with a chosen S3 error.

Tests use it to exercise throttling (503 SlowDown), quota ("The account is write
suspended.") and failures midway through a multi-request operation (``after``).
"""
from __future__ import annotations

import threading
from dataclasses import asdict, dataclass, field
from typing import Any

from .responses import S3Error


@dataclass
class FaultRule:
    """One rule; ``times`` = -1 fails forever, ``after`` lets the first N matches through."""

    op: str | None = None
    endpoint: str | None = None
    key_prefix: str | None = None
    bucket: str | None = None
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    times: int = 1
    after: int = 0
    id: int = 0
    matched: int = field(default=0)
    fired: int = field(default=0)

    def applies(self, op: str, endpoint: str, bucket: str | None, key: str | None) -> bool:
        if self.op not in (None, "*", op) or self.endpoint not in (None, endpoint):
            return False
        if self.bucket is not None and self.bucket != bucket:
            return False
        return self.key_prefix is None or (key or "").startswith(self.key_prefix)


class FaultInjector:
    """Holds the rules and decides, per request, whether one of them fires."""

    _FIELDS = {"op", "endpoint", "key_prefix", "bucket", "status", "code", "message",
               "times", "after"}

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._next_id = 1

    def add(self, spec: dict[str, Any]) -> FaultRule:
        """Add a rule from its JSON form; unknown fields are an error (typos fail loudly)."""
        unknown = set(spec) - self._FIELDS
        if unknown:
            raise ValueError(f"unknown fault rule fields: {sorted(unknown)}")
        with self._lock:
            rule = FaultRule(**spec, id=self._next_id)
            self._next_id += 1
            self._rules.append(rule)
            return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(rule) for rule in self._rules]

    def check(self, op: str, endpoint: str, bucket: str | None, key: str | None) -> S3Error | None:
        """The error to answer with, if a rule fires for this request (first rule wins)."""
        with self._lock:
            for rule in self._rules:
                if not rule.applies(op, endpoint, bucket, key):
                    continue
                rule.matched += 1
                if rule.matched <= rule.after or (0 <= rule.times <= rule.fired):
                    continue
                rule.fired += 1
                return S3Error(rule.status, rule.code, rule.message)
        return None
