"""SIGTERM's steps run one after another, so their parts of ``SHUTDOWN_TIMEOUT_SECONDS`` add up to it:
with a broker that does not answer, the consumer's stop took the whole bound, then the drain and the
cleanup came on top (20 s against a documented 10)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from config.settings import Settings
from consumers.ports import EventLog
from service import shutdown
from service.app import create_app
from service.runtime import HUB
from service.serving import shutdown_budgets
from service.write_batch import WriteBatch
from tests.support.server import hub_settings
from tests.support.tokens import TokenFactory


def test_the_defaults() -> None:
    assert shutdown_budgets(10.0, 5.0) == (3.0, 2.0)  # consumer, cleanup; the drain's 5 s between


@given(total=st.floats(0.01, 600), share=st.floats(0, 0.999))
def test_the_parts_add_up_to_the_bound(total: float, share: float) -> None:
    drain = total * share
    consumer, cleanup = shutdown_budgets(total, drain)
    assert consumer > 0
    assert cleanup > 0
    assert abs(consumer + drain + cleanup - total) < 1e-9


class _RecordingConsumer:
    is_connected = is_consuming = is_caught_up = True

    def __init__(self) -> None:
        self.stopped_within: list[float | None] = []

    async def wait_caught_up(self) -> None:
        return None

    async def start(self) -> None:
        return None

    async def stop(self, timeout: float | None = None) -> None:
        self.stopped_within.append(timeout)


async def test_the_consumer_is_stopped_within_its_part(token_factory: TokenFactory) -> None:
    consumer = _RecordingConsumer()

    def factory(_settings: Settings, _log: EventLog, _batch: WriteBatch) -> _RecordingConsumer:
        return consumer

    client = TestClient(TestServer(create_app(hub_settings(token_factory), consumer_factory=factory)))
    await client.start_server()
    try:
        await shutdown.begin(client.app[HUB], consumer_timeout=3.0)
        assert consumer.stopped_within == [3.0]
    finally:
        await client.close()
