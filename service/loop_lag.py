"""Event-loop lag: how late the loop runs a callback that was due, sampled all the time.

One task sleeps ``interval`` seconds, again and again, and records how much later than asked it
woke up. Anything that holds the loop — a pass over every connection, a garbage collection over many
objects, a long synchronous step — delays every socket read and write by the same amount, and shows
up here first (``realtime_event_loop_lag_seconds``). The cost is one wake-up per interval.

The floor of the measure is the loop's timer resolution (libuv's is a millisecond): lags under
~1 ms mean "on time".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

__all__ = ["LAG_BUCKETS", "sample_loop_lag"]

# Seconds. Fine at the low end: a stall worth finding is a few milliseconds.
LAG_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.2,
    0.5,
    1.0,
    2.5,
)


async def sample_loop_lag(
    interval: float,
    observe: Callable[[float], None],
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> None:
    """Forever: sleep ``interval`` and ``observe`` how late the wake-up was (seconds, ≥ 0)."""
    while True:
        due = clock() + interval
        await asyncio.sleep(interval)
        observe(max(0.0, clock() - due))
