"""The dispatcher console in a real browser: Debian's Chromium, headless, driven by Playwright.

The service runs in-process in development auth mode (``create_app``, as shipped); the page fetches
its own dev token, connects with the vendored official SignalR client, and must show what a dispatcher
needs: the connection state, the transport in use, events as they arrive, refused joins, and groups
rejoined after a reconnect. What the page claims is checked against the server's own state. The
last test puts Debian's nginx with ``config/nginx.conf`` in front of two instances, as
docker-compose.yml does.

Never a downloaded browser: ``executable_path`` is Debian's ``/usr/bin/chromium``; without it the
tests fail with the command that installs it.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from config.settings import Settings, Transport
from publisher import EventPublisher
from publisher import job_assigned as build_job_assigned
from publisher import recommendation_ready as build_recommendation_ready
from tests.support.nginx import running_nginx
from tests.support.server import RunningService, dev_settings, running_service

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 10_000
REGION = "north-america"
expect.set_options(timeout=TIMEOUT_MS)


def recommendation_ready(region: str = REGION) -> dict[str, Any]:
    return build_recommendation_ready(
        region=region, configVersion=3, generatedAt="2026-11-26T10:00:00.123+01:00"
    )


def job_assigned(region: str = REGION) -> dict[str, Any]:
    return build_job_assigned(region=region, contractor_id=str(uuid.uuid4()))


async def publish(service: RunningService, event: dict[str, Any]) -> None:
    """Publish ``event`` to RabbitMQ exactly as an upstream service does (confirmed, persistent)."""
    async with EventPublisher.from_settings(service.settings) as publisher:
        await publisher.publish(event)


def push_through_hub(service: RunningService, event: dict[str, Any]) -> None:
    """For instances run without a broker (the nginx test): the consumer's own entry point."""
    groups = [f"dispatch/{event['region']}"]
    if event["type"] == "JobAssigned":
        groups.append(f"contractor/{event['contractorId']}")
    service.runtime.lifetime.send_groups(groups, event["type"], event)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
async def service(
    tmp_path: Path, broker_settings_factory: Callable[..., Settings]
) -> AsyncIterator[RunningService]:
    """The service in dev mode with its real RabbitMQ consumer (unique exchange and queue names)."""
    broker = broker_settings_factory()
    names = {
        key: getattr(broker, key)
        for key in (
            "rabbitmq_url",
            "instance_id",
            "stream_name",
            "position_queue_prefix",
            "stream_max_bytes",
            "stream_segment_bytes",
            "recommendations_exchange",
            "assignments_exchange",
            "dead_letter_exchange",
            "dead_letter_queue",
            "consume_grace_seconds",
            "queue_expires_ms",
        )
    }
    async with running_service(
        dev_settings(tmp_path / "dev-keys", **names), consumer_factory=True
    ) as running:
        consumer = running.runtime.consumer
        assert consumer is not None
        await asyncio.wait_for(consumer.wait_caught_up(), 20)  # type: ignore[attr-defined]
        yield running


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(
            f"Chromium not found at {CHROMIUM}. Install Debian's package: "
            "`sudo apt-get install -y chromium` (never `playwright install`).",
            pytrace=False,
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page; any uncaught script error or CSP violation fails the test at teardown."""
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = await context.new_page()
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error" and "Content Security Policy" in message.text:
            problems.append(message.text)

    page.on("pageerror", lambda error: problems.append(f"uncaught: {error}"))
    page.on("console", on_console)
    try:
        yield page
    finally:
        await context.close()
    assert not problems, problems


# Every state the status badge shows from now on, in order.
RECORD_STATES = """() => {
  const badge = document.querySelector('[data-testid="state"]');
  window.seenStates = [];
  new MutationObserver(() => window.seenStates.push(badge.dataset.state))
    .observe(badge, { attributes: true, attributeFilter: ["data-state"] });
}"""


# --- helpers --------------------------------------------------------------------------------------


async def open_console(page: Page, service: RunningService) -> None:
    await page.goto(f"{service.url}/")  # redirects to /console/ in development mode
    assert page.url == f"{service.url}/console/"
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "disconnected")


async def connect(
    page: Page,
    *,
    role: str = "dispatcher",
    region: str | None = REGION,
    transport: str = "auto",
    protocol: str = "json",
) -> None:
    await page.get_by_label("Role").select_option(role)
    if region is not None:
        await page.get_by_label("Regions").fill(region)
    await page.get_by_label("Transport").select_option(transport)
    await page.get_by_label("Protocol").select_option(protocol)
    await page.get_by_role("button", name="Connect", exact=True).click()
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "connected")


def server_transport(service: RunningService) -> tuple[str, Transport | None]:
    """The one live connection's id and transport, as the server sees them."""
    (connection,) = list(service.runtime.manager)
    return connection.connection_id, connection.transport


async def expect_row(page: Page, event: dict[str, Any]) -> None:
    row = page.locator(f'[data-testid="event-row"][data-job-id="{event["jobId"]}"]')
    detail = event["contractorId"] if event["type"] == "JobAssigned" else event["requestId"]
    await expect(row.locator("td")).to_have_text(
        [re.compile(r"\d\d:\d\d:\d\d"), event["type"], event["region"], event["jobId"], detail]
    )


# --- tests ----------------------------------------------------------------------------------------


async def test_dispatcher_sees_events_live(service: RunningService, page: Page) -> None:
    await open_console(page, service)
    await connect(page)
    await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
    await expect(page.get_by_test_id("transport-in-use")).to_have_text("WebSockets")
    await expect(page.get_by_test_id("protocol-in-use")).to_have_text("json")
    connection_id, transport = server_transport(service)
    assert transport is Transport.WEBSOCKETS
    await expect(page.get_by_test_id("connection-id")).to_have_text(connection_id)
    assert service.runtime.lifetime.group_size(f"dispatch/{REGION}") == 1

    ready, assigned = recommendation_ready(), job_assigned()
    await publish(service, ready)
    await publish(service, assigned)
    await publish(service, recommendation_ready(region="south-america"))  # not this dispatcher's
    await expect_row(page, ready)
    await expect_row(page, assigned)
    await expect(page.get_by_test_id("event-row")).to_have_count(2)
    await expect(page.get_by_test_id("errors").locator("li")).to_have_count(0)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)

    await page.get_by_role("button", name="Disconnect", exact=True).click()
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "disconnected")
    await service.next_closed()


async def test_refused_join_is_shown_and_the_connection_stays(service: RunningService, page: Page) -> None:
    await open_console(page, service)
    # A token for north-america, pasted, then a region the token does not grant.
    await page.get_by_label("Regions").fill(REGION)
    await page.get_by_role("button", name="Fetch dev token").click()
    await expect(page.get_by_label("Access token")).to_have_value(re.compile(r"^ey"))
    await page.get_by_label("Paste a token").check()
    await connect(page, region=f"south-america, {REGION}")

    error = page.get_by_test_id("error")
    await expect(error).to_have_count(1)
    await expect(error).to_contain_text('JoinDispatchGroup("south-america") refused')
    await expect(error).to_contain_text("Not authorized to join dispatch group for region 'south-america'")
    await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "connected")
    assert service.runtime.lifetime.group_size("dispatch/south-america") == 0

    event = recommendation_ready()
    await publish(service, event)
    await expect_row(page, event)


async def test_contractor_gets_a_dev_identity_and_its_assignments(
    service: RunningService, page: Page
) -> None:
    await open_console(page, service)
    await connect(page, role="contractor", region=None)
    contractor_id = await page.get_by_label("Contractor id").input_value()  # filled in from the dev token
    assert str(uuid.UUID(contractor_id)) == contractor_id
    await expect(page.get_by_test_id("groups")).to_have_text(f"contractor/{contractor_id}")

    event = {**job_assigned(region="south-america"), "contractorId": contractor_id}
    await publish(service, event)
    await expect_row(page, event)
    await expect(page.get_by_test_id("errors").locator("li")).to_have_count(0)


@pytest.mark.parametrize(
    ("transport", "protocol"),
    [("ServerSentEvents", "json"), ("LongPolling", "messagepack"), ("WebSockets", "messagepack")],
)
async def test_each_transport_and_protocol(
    service: RunningService, page: Page, transport: str, protocol: str
) -> None:
    await open_console(page, service)
    await connect(page, transport=transport, protocol=protocol)
    await expect(page.get_by_test_id("transport-in-use")).to_have_text(transport)
    await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
    _, server_side = server_transport(service)
    assert server_side == Transport(transport)
    event = job_assigned()
    await publish(service, event)
    await expect_row(page, event)


async def test_automatic_transport_shows_what_succeeded(tmp_path: Path, page: Page) -> None:
    """With WebSockets off on the server, "automatic" must report the fallback actually in use."""
    settings = dev_settings(
        tmp_path / "dev-keys", hub_transports=[Transport.SERVER_SENT_EVENTS, Transport.LONG_POLLING]
    )
    async with running_service(settings) as service:
        await open_console(page, service)
        await connect(page, transport="auto")
        await expect(page.get_by_test_id("transport-in-use")).to_have_text("ServerSentEvents")
        assert server_transport(service)[1] is Transport.SERVER_SENT_EVENTS


async def test_groups_are_rejoined_after_a_reconnect(service: RunningService, page: Page) -> None:
    await open_console(page, service)
    await connect(page, transport="LongPolling")
    await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
    first_id, _ = server_transport(service)
    await page.evaluate(RECORD_STATES)

    # What a rolling restart does: the server closes every connection, allowing a reconnect.
    service.runtime.handler.close_all(allow_reconnect=True, reason="test restart")
    await service.next_closed()
    # The id changes in onreconnected; the groups line is then cleared and filled again by the rejoin.
    await expect(page.get_by_test_id("connection-id")).not_to_have_text(first_id)
    await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "connected")
    second_id, _ = server_transport(service)
    assert second_id != first_id
    await expect(page.get_by_test_id("connection-id")).to_have_text(second_id)
    assert service.runtime.lifetime.group_size(f"dispatch/{REGION}") == 1
    assert await page.evaluate("window.seenStates") == ["reconnecting", "connected"]

    event = recommendation_ready()
    await publish(service, event)
    await expect_row(page, event)


async def test_console_through_nginx_in_front_of_two_instances(tmp_path: Path, page: Page) -> None:
    """config/nginx.conf as shipped: every request of a connection reaches one instance, on every
    transport, and SSE events are not held back by proxy buffering."""
    key_dir = tmp_path / "dev-keys"  # shared, as the compose volume: a token from either works on both
    async with (
        running_service(dev_settings(key_dir, instance_id="realtime-1")) as one,
        running_service(dev_settings(key_dir, instance_id="realtime-2")) as two,
        running_nginx(tmp_path / "nginx", [s.url.removeprefix("http://") for s in (one, two)]) as proxy,
    ):
        await page.goto(f"{proxy}/console/")
        for transport in ("ServerSentEvents", "LongPolling", "WebSockets"):
            await connect(page, transport=transport)
            await expect(page.get_by_test_id("transport-in-use")).to_have_text(transport)
            await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
            serving = [service for service in (one, two) if len(service.runtime.manager)]
            assert len(serving) == 1, "the connection's requests were spread over both instances"
            event = recommendation_ready()
            push_through_hub(serving[0], event)
            await expect_row(page, event)
            await page.get_by_role("button", name="Disconnect", exact=True).click()
            await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "disconnected")
            await serving[0].next_closed()
