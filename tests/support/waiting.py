"""Waiting for a state that has no event of its own (another process's request reaching the server).

Where an event exists, tests await it; this is only for observing state another process causes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["eventually"]


async def eventually(
    predicate: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)
