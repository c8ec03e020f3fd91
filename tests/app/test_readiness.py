"""``/readyz``: 200 only while the instance can serve what it promises, each check named in the body."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from tests.support.fake_consumer import FakeConsumer
from tests.support.server import hub_settings
from tests.support.tokens import TokenFactory


async def test_readiness_needs_a_consumer_not_only_a_connection(token_factory: TokenFactory) -> None:
    consumer = FakeConsumer()
    client = TestClient(
        TestServer(create_app(hub_settings(token_factory), consumer_factory=consumer.factory()))
    )
    await client.start_server()
    try:
        async with client.get("/readyz") as response:
            assert response.status == 200
        # The link is up but the broker refuses the consumer (a stream whose home node is down):
        # nothing is delivered, so the instance must leave the load balancer's rotation.
        consumer.is_consuming = False
        async with client.get("/readyz") as response:
            assert response.status == 503
            body = await response.json()
        assert body["checks"]["consuming"] is False
        assert body["checks"]["broker_connected"] is True
    finally:
        await client.close()
