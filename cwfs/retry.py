"""When an S3 request is sent again: one rule for every request of a store, however
many fail at once.

botocore's standard retry mode shares a quota of 500 tokens per client, and every retry
spends 5 (10 after a timeout): 16 writers meeting a 10 s outage drained it in about a
second, after which every request failed on its first error (344 of 640 writes EIO). So
botocore sends each request once, and `Retrier` retries both paths (botocore in worker
threads, `cwfs.wire` on trio sockets) with these rules:

- Retried: `StoreUnavailable`, i.e. connection failures, bodies cut short, timeouts,
  5xx and throttling (503 ``SlowDown``, 429). Every other answer is final.
- Each request counts its own attempts, up to ``max_attempts``: no quota shared between
  requests, so ``--max-attempts`` means the same with one request in flight or 64.
  A request also stops once ``timeout_attempts`` of its attempts timed out, so a server
  that accepts requests and never answers fails a call in about ``timeout_attempts``
  times the timeout, not ``max_attempts`` times.
- Between attempts, full-jitter exponential back-off: a random wait below
  min(`MAX_BACKOFF`, 2^(n-1)) seconds before attempt n+1. Waits happen on trio, holding
  no worker thread and no connection.
- Throttling slows the whole store down, not only the throttled request: it raises a
  pause that every request waits out before it is sent. The pause doubles with each
  throttle answer to a request sent after the last raise (so that 64 requests throttled
  together raise it once), up to `MAX_BACKOFF`, and each success lowers the level again.

Every attempt is counted by operation and outcome (``ok``, the S3 error code, or
``cancelled``), with the retries and throttle answers among them: ``cwfs stats``.
"""

from __future__ import annotations

import logging
import math
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio

from cwfs.errors import FsError, StoreTimeout, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
MAX_BACKOFF = 20.0
THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "TooManyRequests", "429", "503"}
)


def backoff(attempt: int) -> float:
    """The wait after failed attempt number ``attempt`` (1-based): full jitter."""
    return random.uniform(0, min(MAX_BACKOFF, 2.0 ** (attempt - 1)))


class Throttle:
    """The store-wide pause raised by throttle answers (see the module's rules)."""

    def __init__(self) -> None:
        self.level = 0
        self.until = -math.inf
        self._raised_at = -math.inf

    def throttled(self, sent_at: float) -> None:
        """A request sent at ``sent_at`` was throttled."""
        if sent_at < self._raised_at:
            return  # sent before the last raise: that raise already answered it
        now = trio.current_time()
        self.level += 1
        self._raised_at = now
        pause = min(MAX_BACKOFF, 0.1 * 2.0 ** (self.level - 1))
        self.until = max(self.until, now + random.uniform(pause / 2, pause))
        log.info("throttled: every request of the mount waits %.1f s", self.until - now)

    def succeeded(self) -> None:
        self.level = max(0, self.level - 1)

    async def wait(self) -> None:
        """Wait out the pause, if one is raised."""
        while (left := self.until - trio.current_time()) > 0:
            await trio.sleep(left)


class Retrier:
    """Runs requests by the module's rules; one per store (endpoint)."""

    def __init__(self, max_attempts: int, timeout_attempts: int) -> None:
        self.max_attempts = max(1, max_attempts)
        self.timeout_attempts = max(1, timeout_attempts)
        self.throttle = Throttle()
        self.outcomes: Counter[tuple[str, str]] = Counter()  # (operation, outcome) -> attempts
        self.retries = 0
        self.throttled = 0

    async def run(self, op: str, key: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """``attempt()`` until it succeeds, fails for good, or runs out of attempts."""
        attempts = timeouts = 0
        while True:
            await self.throttle.wait()
            sent_at = trio.current_time()
            attempts += 1
            self.retries += attempts > 1
            try:
                result = await self._counted(op, attempt)
            except StoreUnavailable as exc:
                timeouts += isinstance(exc, StoreTimeout)
                if exc.code in THROTTLE_CODES:
                    self.throttled += 1
                    self.throttle.throttled(sent_at)
                if attempts >= self.max_attempts or timeouts >= self.timeout_attempts:
                    exc.message = f"{exc.message} (gave up after {attempts} attempts)"
                    raise
                wait = backoff(attempts)
                log.info(
                    "%s %r: %s (%s); attempt %d of %d in %.1f s",
                    op,
                    key,
                    exc.code,
                    exc.message,
                    attempts + 1,
                    self.max_attempts,
                    wait,
                )
                await trio.sleep(wait)
                continue
            self.throttle.succeeded()
            return result

    async def _counted(self, op: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """One attempt, counted by its outcome."""
        outcome = "ok"
        try:
            return await attempt()
        except FsError as exc:
            outcome = exc.code or type(exc).__name__
            raise
        except BaseException as exc:  # counted, then raised as it is
            outcome = "cancelled" if isinstance(exc, trio.Cancelled) else type(exc).__name__
            raise
        finally:
            self.outcomes[op, outcome] += 1
