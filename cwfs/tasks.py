"""Running several awaitables concurrently on trio, failing like a plain call would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio


async def gather(calls: Sequence[Callable[[], Awaitable[Any]]], limiter: trio.CapacityLimiter | None = None) -> list[Any]:
    """Await every call concurrently (at most ``limiter`` at once) and return their results in order.

    If any call fails, the others are cancelled and the first failure is re-raised as
    itself, not wrapped in an exception group, so callers can catch `StoreError`.
    """
    results: list[Any] = [None] * len(calls)
    errors: list[Exception] = []

    async def run(index: int, call: Callable[[], Awaitable[Any]], cancel_scope: trio.CancelScope) -> None:
        try:
            if limiter is None:
                results[index] = await call()
            else:
                async with limiter:
                    results[index] = await call()
        except Exception as exc:  # noqa: BLE001 - handed back to the caller below
            errors.append(exc)
            cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for index, call in enumerate(calls):
            nursery.start_soon(run, index, call, nursery.cancel_scope)
    if errors:
        raise errors[0]
    return results
