"""SIGTERM's steps run one after another, so their parts of ``SHUTDOWN_TIMEOUT_SECONDS`` add up to it:
with a broker that does not answer, the consumer's stop took the whole bound, then the drain and the
cleanup came on top (20 s against a documented 10)."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import given
from hypothesis import strategies as st

from service import shutdown
from service.app import create_app
from service.runtime import HUB
from service.serving import shutdown_budgets
from tests.support.fake_consumer import FakeConsumer
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


async def test_the_consumer_is_stopped_within_its_part(token_factory: TokenFactory) -> None:
    consumer = FakeConsumer()
    client = TestClient(
        TestServer(create_app(hub_settings(token_factory), consumer_factory=consumer.factory()))
    )
    await client.start_server()
    try:
        await shutdown.begin(client.app[HUB], consumer_timeout=3.0)
        assert consumer.stopped_within == [3.0]
    finally:
        await client.close()
