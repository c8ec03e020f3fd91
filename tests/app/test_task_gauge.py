"""``realtime_asyncio_tasks`` counts the loop's tasks without walking them (a walk over one task per
open socket stopped the event loop for milliseconds on every scrape; issue 12)."""

from __future__ import annotations

import asyncio
import gc

from prometheus_client import REGISTRY

from service.metrics import ASYNCIO_TASKS


def _gauge() -> float:
    value = REGISTRY.get_sample_value("realtime_asyncio_tasks")
    assert value is not None
    return value


async def test_the_task_gauge_follows_the_tasks_alive() -> None:
    assert ASYNCIO_TASKS is not None
    gc.collect()  # tasks that earlier tests finished count until they are freed
    before = _gauge()
    assert before >= len(asyncio.all_tasks())
    release = asyncio.Event()
    tasks = [asyncio.create_task(release.wait()) for _ in range(250)]
    await asyncio.sleep(0)
    assert _gauge() == before + 250
    release.set()
    for task in tasks:
        await task
    del tasks, task
    await asyncio.sleep(0)
    gc.collect()  # finished tasks count until they are freed
    assert _gauge() == before
