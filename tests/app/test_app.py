"""``create_app`` builds all a request needs; startup only loads keys, so nothing answers "not ready"."""

from __future__ import annotations

from pathlib import Path

from aiohttp import hdrs
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.runtime import HUB
from service.transports import HubEndpoint
from tests.support.server import dev_settings, hub_settings
from tests.support.tokens import TokenFactory


def test_the_app_has_its_validator_policy_and_endpoint_when_created(tmp_path: Path) -> None:
    """No event loop here: building the app needs none, and reads no key (startup does that)."""
    key_dir = tmp_path / "dev-keys"
    app = create_app(dev_settings(key_dir), consumer_factory=False)
    runtime = app[HUB]
    assert isinstance(runtime.endpoint, HubEndpoint)
    assert runtime.auth.jwks.fetch_count == 0
    assert not key_dir.exists()


async def test_negotiate_succeeds_as_soon_as_the_app_has_started(token_factory: TokenFactory) -> None:
    client = TestClient(TestServer(create_app(hub_settings(token_factory), consumer_factory=False)))
    await client.start_server()  # runs the startup (keys loaded), then serves
    try:
        headers = {hdrs.AUTHORIZATION: f"Bearer {token_factory.dispatcher()}"}
        async with client.post("/hub/recommendations/negotiate", headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["connectionId"]
    finally:
        await client.close()


async def test_dev_token_and_negotiate_succeed_as_soon_as_the_app_has_started(tmp_path: Path) -> None:
    client = TestClient(TestServer(create_app(dev_settings(tmp_path / "dev-keys"), consumer_factory=False)))
    await client.start_server()
    try:
        async with client.get("/dev/token", params={"role": "admin"}) as response:
            assert response.status == 200
            token = (await response.json())["token"]
        async with client.get("/dev/jwks.json") as response:
            assert response.status == 200
            assert len((await response.json())["keys"]) == 1
        headers = {hdrs.AUTHORIZATION: f"Bearer {token}"}
        async with client.post("/hub/recommendations/negotiate", headers=headers) as response:
            assert response.status == 200
    finally:
        await client.close()
