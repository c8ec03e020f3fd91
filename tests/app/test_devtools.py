"""Development routes: dev tokens the hub accepts, the dev JWKS, the console — and none of it in production.

The service runs in-process exactly as shipped (``create_app``); tokens are checked the only way that
matters, by the hub itself: negotiate, handshake and a group join over a raw WebSocket.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from service.devtools import STATIC_DIR
from tests.support.server import RunningService, dev_settings, hub_settings, running_service
from tests.support.tokens import TokenFactory
from tests.support.wire import RawHubClient

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "tests" / "js" / "node_modules"
VENDORED = {
    "signalr.min.js": ("@microsoft/signalr", "dist/browser/signalr.min.js"),
    "signalr-protocol-msgpack.min.js": (
        "@microsoft/signalr-protocol-msgpack",
        "dist/browser/signalr-protocol-msgpack.min.js",
    ),
}
DEV_ONLY_PATHS = (
    "/dev/token?role=dispatcher&region=north-america",
    "/dev/token?role=admin",
    "/dev/jwks.json",
    "/console/",
    "/console",
    "/console/app.js",
    "/console/index.html",
    "/console/vendor/signalr.min.js",
)


@pytest.fixture
async def dev_service(tmp_path: Path) -> AsyncIterator[RunningService]:
    async with running_service(dev_settings(tmp_path / "dev-keys")) as running:
        yield running


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def _get_json(session: aiohttp.ClientSession, url: str, status: int = 200) -> dict[str, Any]:
    async with session.get(url) as response:
        assert response.status == status, await response.text()
        body: dict[str, Any] = await response.json()
        return body


async def _invoke(client: RawHubClient, target: str, *arguments: Any) -> dict[str, Any]:
    invocation_id = uuid.uuid4().hex
    await client.send(
        {"type": 1, "target": target, "arguments": list(arguments), "invocationId": invocation_id}
    )
    completion = await client.next_of_type(3)
    assert completion["invocationId"] == invocation_id
    return completion


async def test_dispatcher_token_is_accepted_by_the_hub_for_its_regions_only(
    dev_service: RunningService, session: aiohttp.ClientSession
) -> None:
    body = await _get_json(
        session, f"{dev_service.url}/dev/token?role=dispatcher&region=North-America,europe"
    )
    assert body["role"] == "dispatcher"
    assert body["regions"] == ["north-america", "europe"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["expiresAt"])

    client, _ = await RawHubClient.connect(session, dev_service.hub_url, body["token"])
    assert "error" not in await _invoke(client, "JoinDispatchGroup", "north-america")
    assert "error" not in await _invoke(client, "JoinDispatchGroup", "europe")
    refused = await _invoke(client, "JoinDispatchGroup", "south-america")
    assert "Not authorized to join dispatch group for region 'south-america'" in refused["error"]
    lifetime = dev_service.runtime.lifetime
    assert lifetime.group_size("dispatch/north-america") == 1
    assert lifetime.group_size("dispatch/south-america") == 0
    await client.ws.close()


async def test_contractor_and_admin_tokens_are_accepted_by_the_hub(
    dev_service: RunningService, session: aiohttp.ClientSession
) -> None:
    contractor_id = str(uuid.uuid4())
    contractor = await _get_json(
        session, f"{dev_service.url}/dev/token?role=contractor&contractorId={contractor_id.upper()}"
    )
    assert contractor["contractorId"] == contractor_id  # canonical lower case, as the hub names groups
    client, _ = await RawHubClient.connect(session, dev_service.hub_url, contractor["token"])
    assert "error" not in await _invoke(client, "JoinContractorGroup", contractor_id)
    assert "error" in await _invoke(client, "JoinContractorGroup", str(uuid.uuid4()))
    assert "error" in await _invoke(client, "JoinDispatchGroup", "north-america")

    random_contractor = await _get_json(session, f"{dev_service.url}/dev/token?role=contractor")
    assert uuid.UUID(random_contractor["contractorId"])

    admin = await _get_json(session, f"{dev_service.url}/dev/token?role=admin")
    admin_client, _ = await RawHubClient.connect(session, dev_service.hub_url, admin["token"])
    assert "error" not in await _invoke(admin_client, "JoinDispatchGroup", "anywhere")
    assert "error" not in await _invoke(admin_client, "JoinContractorGroup", contractor_id)
    await client.ws.close()
    await admin_client.ws.close()


async def test_dev_tokens_verify_against_the_published_jwks(
    dev_service: RunningService, session: aiohttp.ClientSession
) -> None:
    jwks = await _get_json(session, f"{dev_service.url}/dev/jwks.json")
    body = await _get_json(session, f"{dev_service.url}/dev/token?role=admin&ttl=120")
    (key,) = jwks["keys"]
    assert jwt.get_unverified_header(body["token"])["kid"] == key["kid"]
    claims = jwt.decode(
        body["token"], jwt.PyJWK(key).key, algorithms=["RS256"], options={"verify_aud": False}
    )
    assert claims["cognito:groups"] == ["Admin"]
    assert claims["exp"] - claims["iat"] == 120
    assert set(key) == {"kid", "kty", "alg", "use", "n", "e"}  # public members only


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("", "role must be"),
        ("role=root", "role must be"),
        ("role=dispatcher", "region is required"),
        ("role=dispatcher&region=north_america", "region must be"),
        ("role=contractor&contractorId=bob", "contractorId must be a UUID"),
        ("role=admin&ttl=forever", "ttl must be"),
        ("role=admin&ttl=999999", "ttl must be between"),
    ],
)
async def test_bad_token_requests_say_what_is_wrong(
    dev_service: RunningService, session: aiohttp.ClientSession, query: str, message: str
) -> None:
    body = await _get_json(session, f"{dev_service.url}/dev/token?{query}", status=400)
    assert message in body["error"]


async def test_console_is_served_same_origin_only(
    dev_service: RunningService, session: aiohttp.ClientSession
) -> None:
    async with session.get(f"{dev_service.url}/", allow_redirects=False) as response:
        assert response.status == 302
        assert response.headers["Location"] == "/console/"
    async with session.get(f"{dev_service.url}/console/") as response:
        assert response.status == 200
        html = await response.text()
        csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in csp
    assert "connect-src 'self';" in csp
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert {"vendor/signalr.min.js", "vendor/signalr-protocol-msgpack.min.js", "app.js"} <= set(sources)
    assert all(not s.startswith(("http:", "https:", "//")) for s in sources), sources  # no CDN
    for path in ("app.js", "style.css", "vendor/signalr.min.js", "vendor/signalr-protocol-msgpack.min.js"):
        async with session.get(f"{dev_service.url}/console/{path}") as response:
            assert response.status == 200, path
    async with session.get(f"{dev_service.url}/console/no-such-file.js") as response:
        assert response.status == 404


def test_vendored_bundles_are_the_interop_tests_client() -> None:
    """The console must run the same official client the interop matrix tests, byte for byte."""
    package = json.loads((ROOT / "tests" / "js" / "package.json").read_text())
    readme = (STATIC_DIR / "vendor" / "README.md").read_text()
    for name, (package_name, dist_path) in VENDORED.items():
        version = package["dependencies"][package_name]
        vendored = (STATIC_DIR / "vendor" / name).read_bytes()
        assert f'="{version}"'.encode() in vendored, f"{name} is not version {version}"
        assert f"| {version} |" in readme
        source = NODE_MODULES / package_name / dist_path
        if source.is_file():  # present after `npm ci` (make test, CI)
            assert vendored == source.read_bytes(), f"re-vendor {name}: see service/static/vendor/README.md"
    for license_file in ("LICENSE.signalr.txt", "LICENSE.msgpack.txt"):
        assert (STATIC_DIR / "vendor" / license_file).read_text().strip()


async def test_production_mode_has_no_dev_routes(
    token_factory: TokenFactory, session: aiohttp.ClientSession
) -> None:
    async with running_service(hub_settings(token_factory)) as service:
        assert not service.settings.auth_dev_mode
        for path in (*DEV_ONLY_PATHS, "/"):
            async with session.get(f"{service.url}{path}", allow_redirects=False) as response:
                assert response.status == 404, path
        async with session.get(f"{service.url}/healthz") as response:
            assert response.status == 200  # the service itself is up; only the dev routes are absent
