"""The event-loop lag sampler: a loop held by a blocking call shows up as one large lag."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric

from service.app import create_app
from service.loop_lag import sample_loop_lag
from tests.support.server import hub_settings
from tests.support.tokens import TokenFactory


async def test_a_blocking_call_in_the_loop_is_recorded_as_a_lag_at_least_as_long() -> None:
    lags: list[float] = []
    sampled = asyncio.Event()

    def observe(lag: float) -> None:
        lags.append(lag)
        sampled.set()

    task = asyncio.create_task(sample_loop_lag(0.01, observe))
    try:
        await sampled.wait()  # the sampler runs
        sampled.clear()
        before = len(lags)
        time.sleep(0.3)  # holds the loop: the sampler's wake-up is due meanwhile  # noqa: ASYNC251
        await sampled.wait()
        assert max(lags[before:]) >= 0.2
        assert all(lag >= 0 for lag in lags)
    finally:
        task.cancel()


def _over_200ms(metrics: str) -> float:
    """Samples above 200 ms: the total count minus the count in the buckets up to 0.2 s."""
    values = {}
    for line in metrics.splitlines():
        if line.startswith(
            ('realtime_event_loop_lag_seconds_bucket{le="0.2"}', "realtime_event_loop_lag_seconds_count")
        ):
            name, value = line.rsplit(" ", 1)
            values[name.split("{")[0]] = float(value)
    return values["realtime_event_loop_lag_seconds_count"] - values["realtime_event_loop_lag_seconds_bucket"]


async def test_the_app_samples_the_lag_into_metrics(token_factory: TokenFactory) -> None:
    client = TestClient(
        TestServer(
            create_app(
                hub_settings(token_factory, event_loop_lag_interval_seconds=0.01), consumer_factory=False
            )
        )
    )
    await client.start_server()
    try:
        async with client.get("/metrics") as response:
            before = _over_200ms(await response.text())
        time.sleep(0.3)  # noqa: ASYNC251  # a stall the running sampler must see
        for _ in range(200):
            async with client.get("/metrics") as response:
                if _over_200ms(await response.text()) > before:
                    return
            await asyncio.sleep(0.01)
        raise AssertionError("the stall is not in realtime_event_loop_lag_seconds")
    finally:
        await client.close()


class _SlowCollector:
    """Stands for the process collector listing /proc/self/fd at 10,000 sockets (~10 ms; longer here)."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def describe(self) -> list[Metric]:
        return []  # else registering calls collect() once, here on the test's thread

    def collect(self) -> Iterator[Metric]:
        self.threads.append(threading.get_ident())
        time.sleep(0.3)
        return iter(())


async def test_a_metrics_scrape_does_not_hold_the_event_loop(token_factory: TokenFactory) -> None:
    collector = _SlowCollector()
    client = TestClient(TestServer(create_app(hub_settings(token_factory), consumer_factory=False)))
    await client.start_server()
    REGISTRY.register(collector)  # duck-typed, as prometheus_client allows
    try:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        async with client.get("/metrics") as response:
            assert response.status == 200
        ticker.cancel()
        assert collector.threads
        assert threading.get_ident() not in collector.threads  # collected off the loop's thread
        assert ticks >= 10  # the loop went on during the 0.3 s collection
    finally:
        REGISTRY.unregister(collector)
        await client.close()
