"""The retry rules of `cwfs.retry`, on a mock clock. Through a mount, the outage test in
tests/test_reliability.py and the stalled-server tests there show the same rules."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from cwfs.errors import ObjectMissing, StoreError, StoreTimeout, StoreUnavailable
from cwfs.retry import MAX_BACKOFF, Retrier


def run(test: Callable[[], Awaitable[None]]) -> None:
    trio.run(test, clock=trio.testing.MockClock(autojump_threshold=0))


def failing(errors: list[StoreError]) -> tuple[Callable[[], Awaitable[str]], list[float]]:
    """An attempt that raises ``errors`` in turn, then succeeds; and when it was called."""
    calls: list[float] = []

    async def attempt() -> str:
        calls.append(trio.current_time())
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return attempt, calls


def unavailable(code: str = "InternalError") -> StoreUnavailable:
    return StoreUnavailable("down", op="PutObject", key="k", code=code)


def test_each_request_counts_its_own_attempts_however_many_fail_at_once():
    async def main() -> None:
        retrier = Retrier(max_attempts=10, timeout_attempts=3)
        results: list[str] = []

        async def one() -> None:
            attempt, _ = failing([unavailable("ConnectionClosedError")] * 9)
            results.append(await retrier.run("PutObject", "k", attempt))

        async with trio.open_nursery() as nursery:
            for _ in range(64):
                nursery.start_soon(one)
        assert results == ["ok"] * 64

    run(main)


def test_attempts_run_out_and_the_error_says_so():
    async def main() -> None:
        attempt, calls = failing([unavailable()] * 10)
        with pytest.raises(StoreUnavailable, match="gave up after 3 attempts"):
            await Retrier(max_attempts=3, timeout_attempts=3).run("PutObject", "k", attempt)
        assert len(calls) == 3
        assert calls[2] - calls[0] <= 1 + 2  # full jitter below 2^(n-1) s

    run(main)


def test_timeouts_end_a_request_sooner_than_other_failures():
    async def main() -> None:
        errors = [unavailable(), StoreTimeout("no answer", code="Timeout")] * 5
        attempt, calls = failing(errors)
        with pytest.raises(StoreTimeout):
            await Retrier(max_attempts=10, timeout_attempts=2).run("HeadObject", "k", attempt)
        assert len(calls) == 4  # two timeouts, with the other failures between them

    run(main)


def test_final_answers_are_not_retried():
    async def main() -> None:
        attempt, calls = failing([ObjectMissing("gone", code="NoSuchKey")])
        with pytest.raises(ObjectMissing):
            await Retrier(max_attempts=10, timeout_attempts=3).run("GetObject", "k", attempt)
        assert len(calls) == 1

    run(main)


def test_throttling_pauses_every_request_of_the_store():
    """A SlowDown makes the requests that come after it wait, not only its own retry;
    many requests throttled together raise the pause once."""

    async def main() -> None:
        retrier = Retrier(max_attempts=10, timeout_attempts=3)
        throttled = [failing([unavailable("SlowDown")]) for _ in range(16)]
        async with trio.open_nursery() as nursery:
            for attempt, _ in throttled:
                nursery.start_soon(retrier.run, "PutObject", "k", attempt)
            await trio.sleep(0.001)  # all 16 were sent at 0 and throttled
            assert retrier.throttle.level == 1
            until = retrier.throttle.until
            assert until > trio.current_time()
            later, calls = failing([])
            nursery.start_soon(retrier.run, "HeadObject", "other", later)
        assert calls[0] >= until  # sent only once the pause was over
        assert retrier.throttle.level == 0  # lowered by the successes

    run(main)


def test_the_pause_grows_with_throttling_that_goes_on_and_stays_bounded():
    async def main() -> None:
        retrier = Retrier(max_attempts=40, timeout_attempts=3)
        attempt, calls = failing([unavailable("SlowDown")] * 30)
        await retrier.run("PutObject", "k", attempt)
        gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
        assert max(gaps) <= 2 * MAX_BACKOFF  # the pause and the request's own back-off
        assert sum(gaps[-5:]) > sum(gaps[:5])

    run(main)
