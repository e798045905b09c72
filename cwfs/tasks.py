"""Running several awaitables concurrently on trio, failing like a plain call would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio


async def gather(
    calls: Sequence[Callable[[], Awaitable[Any]]], limiter: trio.CapacityLimiter | None = None
) -> list[Any]:
    """Await every call concurrently and return their results in order.

    With a ``limiter``, at most its ``total_tokens`` worker tasks pull the calls in
    order, each holding a token while its call runs: a directory rename of 100,000
    objects runs as a few workers, not 100,000 tasks. The limiter may be shared, to
    bound several gathers together. Without one, every call gets its own task.

    If any call fails, the others are cancelled and the first failure is re-raised as
    itself, not wrapped in an exception group, so callers can catch `StoreError`.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[Exception] = []
    pending = iter(enumerate(calls))  # shared by the workers: each takes the next call

    async def work(cancel_scope: trio.CancelScope) -> None:
        for index, call in pending:
            try:
                if limiter is None:
                    results[index] = await call()
                else:
                    async with limiter:
                        results[index] = await call()
            except Exception as exc:  # noqa: BLE001 - handed back to the caller below
                errors.append(exc)
                cancel_scope.cancel()
                return

    workers = len(calls) if limiter is None else min(len(calls), limiter.total_tokens)
    async with trio.open_nursery() as nursery:
        for _ in range(int(workers)):
            nursery.start_soon(work, nursery.cancel_scope)
    if errors:
        raise errors[0]
    return results
