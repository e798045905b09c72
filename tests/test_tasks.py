"""cwfs.tasks.gather: a bounded pool of workers that fails like a plain call."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from cwfs.tasks import gather


class Probe:
    """Calls that record how many run at once, and how many tasks the pool has."""

    def __init__(self) -> None:
        self.running = self.peak = self.peak_tasks = 0
        self.started: list[int] = []
        self.finished: list[int] = []

    def call(self, index: int, delay: float = 0.01, fail: bool = False):
        async def run() -> int:
            self.started.append(index)
            self.running += 1
            self.peak = max(self.peak, self.running)
            pool = trio.lowlevel.current_task().parent_nursery
            self.peak_tasks = max(self.peak_tasks, len(pool.child_tasks))
            try:
                await trio.sleep(delay)
                if fail:
                    raise KeyError(index)
                self.finished.append(index)
                return index * 10
            finally:
                self.running -= 1

        return run


def run_with_clock(fn):
    """Run on an autojumping clock: the sleeps above cost no real time."""
    return trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_results_come_back_in_order_with_at_most_n_tasks():
    probe = Probe()
    # Later calls finish first: the order of results is the order of calls.
    calls = [probe.call(i, delay=(1000 - i) / 1000) for i in range(1000)]

    async def main() -> list[int]:
        return await gather(calls, limiter=trio.CapacityLimiter(8))

    assert run_with_clock(main) == [i * 10 for i in range(1000)]
    assert probe.peak == 8
    assert probe.peak_tasks == 8  # the pool's tasks, not one per call


def test_a_shared_limiter_bounds_several_gathers_together():
    probe = Probe()
    limiter = trio.CapacityLimiter(4)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            for batch in range(3):
                calls = [probe.call(batch * 100 + i) for i in range(50)]
                nursery.start_soon(gather, calls, limiter)

    run_with_clock(main)
    assert probe.peak == 4 and len(probe.finished) == 150


def test_fewer_calls_than_tokens_start_one_task_each():
    probe = Probe()

    async def main() -> list[int]:
        return await gather([probe.call(i) for i in range(3)], limiter=trio.CapacityLimiter(16))

    assert run_with_clock(main) == [0, 10, 20]
    assert probe.peak_tasks == 3


def test_without_a_limiter_every_call_runs_at_once():
    probe = Probe()

    async def main() -> list[int]:
        return await gather([probe.call(i) for i in range(20)])

    assert run_with_clock(main) == [i * 10 for i in range(20)]
    assert probe.peak == 20


@pytest.mark.parametrize("limiter", [None, 4])
def test_the_first_failure_is_raised_as_itself_and_the_rest_cancelled(limiter):
    probe = Probe()
    # Call 2 fails first (at 0.5 s), call 3 would fail later; the others take 10 s.
    calls = [probe.call(i, delay=10) for i in range(100)]
    calls[2] = probe.call(2, delay=0.5, fail=True)
    calls[3] = probe.call(3, delay=1, fail=True)

    async def main() -> None:
        with pytest.raises(KeyError) as raised:  # not an exception group
            await gather(calls, None if limiter is None else trio.CapacityLimiter(limiter))
        assert raised.value.args == (2,)
        assert trio.current_time() == pytest.approx(0.5)  # nothing waited for the slow ones

    run_with_clock(main)
    assert probe.finished == []  # every other call was cancelled
    assert probe.running == 0
    if limiter is not None:
        assert sorted(probe.started) == [0, 1, 2, 3]  # none started after the failure


def test_no_calls():
    async def main() -> list[int]:
        return await gather([], limiter=trio.CapacityLimiter(4))

    assert run_with_clock(main) == []
