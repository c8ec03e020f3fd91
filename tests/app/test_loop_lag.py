"""The event-loop lag sampler: a loop held by a blocking call shows up as one large lag."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient, TestServer

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
