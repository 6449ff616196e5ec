"""The deleter waits for a storm of unlinks to pause before it deletes objects."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from xfs.mrc import deleter
from xfs.mrc.deleter import Deleter


def settle_time(wakes: list[float]) -> float:
    """When ``_settle`` returns, with wakes at the given times (mock clock, from 0)."""
    d = Deleter(*([None] * 4))  # type: ignore[arg-type]
    out: dict[str, Any] = {}

    async def main() -> None:
        async def waker() -> None:
            for at in wakes:
                await trio.sleep_until(at)
                d.wake()

        async with trio.open_nursery() as n:
            n.start_soon(waker)
            await d._settle()
            out["t"] = trio.current_time()
            n.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out["t"]


def test_a_round_waits_for_a_pause_in_the_wakes() -> None:
    assert settle_time([]) == deleter.SETTLE
    assert settle_time([0.1, 0.3, 0.7]) == 0.7 + deleter.SETTLE


def test_a_long_storm_waits_at_most_max_settle() -> None:
    storm = [i * 0.1 for i in range(1, 200)]  # wakes every 0.1 s for 20 s
    assert settle_time(storm) == deleter.MAX_SETTLE


def users_first_returns_at(requests: list[float]) -> float:
    """When ``_users_first`` returns, with user requests at the given times."""
    heard = [-1e9]

    def last() -> float:
        return max([heard[0]] + [t for t in requests if t <= trio.current_time()])

    d = Deleter(*([None] * 4), last_request=last)  # type: ignore[arg-type]
    out: dict[str, float] = {}

    async def main() -> None:
        await d._users_first()
        out["t"] = trio.current_time()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return out["t"]


def test_a_batch_waits_for_users_to_pause() -> None:
    assert users_first_returns_at([]) == 0
    assert users_first_returns_at([0.0, 0.1, 0.2]) == 0.2 + deleter.QUIET
    steady = [i * 0.1 for i in range(1000)]  # a request every 0.1 s
    assert users_first_returns_at(steady) == deleter.MAX_DEFER
