"""The dispatcher console in a real browser: Debian's Chromium, headless, driven by Playwright.

The service runs in-process in development auth mode (``create_app``, as shipped) with its real
RabbitMQ consumer; events are published to RabbitMQ as an upstream service publishes them. The page
fetches its own dev token, connects with the vendored official SignalR client and ``?positions=true``,
resumes into its groups with the console's ``Continuity`` module, and must show what a dispatcher
needs: the connection state, the transport in use, events as they arrive with their positions, the
position and the last resume's outcome, refused resumes, and — across a dropped connection, a
restart of the service, a reload of the page — every event once, in order. When the server cannot
replay, the page says so and marks the gap. What the page claims is checked against the server's own
state. The last test puts Debian's nginx with ``config/nginx.conf`` in front of two instances, as
docker-compose.yml does.

Never a downloaded browser: ``executable_path`` is Debian's ``/usr/bin/chromium``; without it the
tests fail with the command that installs it.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from schemas.log import LogRecord, entry_check
from tests.support.nginx import running_nginx
from tests.support.server import RunningService, dev_settings, running_service
from tests.support.waiting import eventually

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
RECONNECT_TIMEOUT_MS = 30_000  # the console backs off between attempts (0.5 s, 1 s, 2 s, … + jitter)
REGION = "north-america"
POSITION = re.compile(r"^\d+:[0-9a-f]{8}$")
expect.set_options(timeout=TIMEOUT_MS)


def recommendation_ready(region: str = REGION) -> dict[str, Any]:
    return build_recommendation_ready(
        region=region, configVersion=3, generatedAt="2026-11-26T10:00:00.123+01:00"
    )


def job_assigned(region: str = REGION) -> dict[str, Any]:
    return build_job_assigned(region=region, contractor_id=str(uuid.uuid4()))


async def publish(target: RunningService | Settings, *events: dict[str, Any]) -> None:
    """Publish ``events`` to RabbitMQ exactly as an upstream service does (confirmed, persistent)."""
    settings = target.settings if isinstance(target, RunningService) else target
    async with EventPublisher.from_settings(settings) as publisher:
        for event in events:
            await publisher.publish(event)


def offset(position: str) -> int:
    return int(position.split(":", 1)[0])


async def read_up_to(service: RunningService, wanted: int) -> None:
    """Wait until the service's consumer has read the log up to offset ``wanted``."""

    def there() -> bool:
        head = service.runtime.journal.head
        return head is not None and head.offset >= wanted

    await eventually(there, timeout=20, what=f"the service to read offset {wanted}")


class SharedLog:
    """For instances run without a broker (the nginx test): what their consumers would do with one
    stream — every instance records each entry at the same offset, the serving one delivers it."""

    def __init__(self, *services: RunningService) -> None:
        self.services = services
        self.next_offset = 0

    def push(self, serving: RunningService, event: dict[str, Any]) -> None:
        groups = [f"dispatch/{event['region']}"]
        if event["type"] == "JobAssigned":
            groups.append(f"contractor/{event['contractorId']}")
        check = entry_check(str(event).encode(), message_id=None, exchange="test", routing_key="#")
        record = LogRecord(self.next_offset, check, event["type"], tuple(groups), event)
        self.next_offset += 1
        for service in self.services:
            service.runtime.journal.record(record)
        serving.runtime.journal.deliver(record)


# --- fixtures -------------------------------------------------------------------------------------

SettingsMaker = Callable[..., Settings]


@pytest.fixture
def make_settings(tmp_path: Path, broker_settings_factory: SettingsMaker) -> SettingsMaker:
    """Dev-mode settings on the shared broker with unique stream, exchange and queue names."""
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

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {**names, "checkpoint_interval_seconds": 0.5, **overrides}
        return dev_settings(tmp_path / "dev-keys", **values)

    return make


@contextlib.asynccontextmanager
async def console_service(settings: Settings, *, port: int = 0) -> AsyncIterator[RunningService]:
    """The service with its real RabbitMQ consumer, once it has read the stream up to its end."""
    async with running_service(settings, consumer_factory=True, port=port) as running:
        consumer = running.runtime.consumer
        assert consumer is not None
        await asyncio.wait_for(consumer.wait_caught_up(), 20)
        yield running


@pytest.fixture
async def service(make_settings: SettingsMaker) -> AsyncIterator[RunningService]:
    async with console_service(make_settings()) as running:
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
    context = await browser.new_context(viewport={"width": 1280, "height": 1000})
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

# The event rows, oldest first (the table shows the newest on top).
ROWS_OLDEST_FIRST = """() => [...document.querySelectorAll('[data-testid="event-row"]')]
  .map((row) => row.dataset.jobId).reverse()"""


# Set every position the console keeps in localStorage to the argument; returns how many it set.
REWIND_STORED_POSITIONS = """(position) => {
  const keys = Object.keys(localStorage).filter((key) => key.startsWith("smartscheduler-realtime/console/"));
  for (const key of keys) localStorage.setItem(key, position);
  return keys.length;
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


async def disconnect(page: Page, service: RunningService) -> None:
    await page.get_by_role("button", name="Disconnect", exact=True).click()
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "disconnected")
    await service.next_closed()


def server_transport(service: RunningService) -> tuple[str, Transport | None]:
    """The one live connection's id and transport, as the server sees them."""
    (connection,) = list(service.runtime.manager)
    return connection.connection_id, connection.transport


def server_positions(service: RunningService) -> bool:
    """Whether the one live connection asked for positions (``?positions=true``)."""
    (connection,) = list(service.runtime.manager)
    return connection.positions


async def expect_row(page: Page, event: dict[str, Any]) -> str:
    """The event's row shows what it is; returns the position it arrived with."""
    row = page.locator(f'[data-testid="event-row"][data-job-id="{event["jobId"]}"]')
    detail = event["contractorId"] if event["type"] == "JobAssigned" else event["requestId"]
    await expect(row.locator("td")).to_have_text(
        [re.compile(r"\d\d:\d\d:\d\d"), event["type"], event["region"], event["jobId"], detail, POSITION]
    )
    position = await row.get_attribute("data-position")
    assert position is not None
    return position


async def expect_rows(page: Page, events: list[dict[str, Any]]) -> None:
    """The table shows exactly ``events``, each once, in the order they were published."""
    expected = [event["jobId"] for event in events]
    await expect(page.get_by_test_id("event-row")).to_have_count(len(expected))
    assert await page.evaluate(ROWS_OLDEST_FIRST) == expected
    await expect(page.get_by_test_id("event-count")).to_have_text(str(len(expected)))


async def expect_position(page: Page, position: str) -> None:
    await expect(page.get_by_test_id("position")).to_have_text(position)


async def expect_resume(
    page: Page, outcome: str, *, replayed: int | None = None, timeout: float = TIMEOUT_MS
) -> None:
    """The status panel's last resume: ``recovered``, a reason it was not, or ``refused``."""
    resume = page.get_by_test_id("resume")
    await expect(resume).to_have_attribute("data-outcome", outcome, timeout=timeout)
    if replayed is not None:
        await expect(resume).to_have_attribute("data-replayed", str(replayed))
        await expect(resume).to_contain_text(f"{replayed} replayed")


# --- tests ----------------------------------------------------------------------------------------


async def test_dispatcher_sees_events_and_the_position_advancing(service: RunningService, page: Page) -> None:
    await open_console(page, service)
    await expect_position(page, "—")
    await connect(page)
    await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
    await expect(page.get_by_test_id("transport-in-use")).to_have_text("WebSockets")
    await expect(page.get_by_test_id("protocol-in-use")).to_have_text("json")
    connection_id, transport = server_transport(service)
    assert transport is Transport.WEBSOCKETS
    assert server_positions(service)
    await expect(page.get_by_test_id("connection-id")).to_have_text(connection_id)
    assert service.runtime.lifetime.group_size(f"dispatch/{REGION}") == 1
    # No position kept: a fresh start, which misses nothing — no notice.
    await expect_resume(page, "fresh", replayed=0)
    await expect(page.get_by_test_id("resume")).to_contain_text("not recovered — fresh")
    await expect(page.get_by_test_id("replay-notice")).to_be_hidden()

    ready, assigned = recommendation_ready(), job_assigned()
    await publish(service, ready)
    first = await expect_row(page, ready)
    await expect_position(page, first)
    await publish(service, assigned)
    second = await expect_row(page, assigned)
    await expect_position(page, second)
    assert offset(second) > offset(first)

    # Not this dispatcher's: no row, but the next checkpoint moves the position past it.
    await publish(service, recommendation_ready(region="south-america"))
    await read_up_to(service, offset(second) + 1)
    head = service.runtime.journal.head
    assert head is not None
    await expect_position(page, str(head))
    await expect_rows(page, [ready, assigned])
    await expect(page.get_by_test_id("errors").locator("li")).to_have_count(0)

    await disconnect(page, service)
    # Kept for the next Connect (hub URL + groups), and shown as such.
    await expect_position(page, str(head))
    await expect(page.get_by_test_id("position-note")).to_contain_text("stored")
    await expect(page.get_by_test_id("forget-position")).to_be_enabled()


async def test_refused_resume_is_shown_and_the_connection_stays(service: RunningService, page: Page) -> None:
    await open_console(page, service)
    # A token for north-america, pasted, then a region the token does not grant.
    await page.get_by_label("Regions").fill(REGION)
    await page.get_by_role("button", name="Fetch dev token").click()
    await expect(page.get_by_label("Access token")).to_have_value(re.compile(r"^ey"))
    await page.get_by_label("Paste a token").check()
    await connect(page, region=f"south-america, {REGION}")

    error = page.get_by_test_id("error")
    await expect(error).to_have_count(1)
    await expect(error).to_contain_text(f"Resume(dispatch/south-america, dispatch/{REGION}) refused")
    await expect(error).to_contain_text("Not authorized to join dispatch group for region 'south-america'")
    await expect_resume(page, "refused")
    await expect(page.get_by_test_id("groups")).to_have_text("—")  # one refusal joins nothing
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "connected")
    connection_id, _ = server_transport(service)  # still open
    await expect(page.get_by_test_id("connection-id")).to_have_text(connection_id)
    assert service.runtime.lifetime.group_size("dispatch/south-america") == 0
    assert service.runtime.lifetime.group_size(f"dispatch/{REGION}") == 0

    # The dispatcher fixes the form and connects again: resumed, events arrive.
    await disconnect(page, service)
    await connect(page, region=REGION)
    await expect_resume(page, "fresh", replayed=0)
    await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
    event = recommendation_ready()
    await publish(service, event)
    await expect_row(page, event)
    await expect(error).to_have_count(1)


async def test_contractor_gets_a_dev_identity_and_its_assignments(
    service: RunningService, page: Page
) -> None:
    await open_console(page, service)
    await connect(page, role="contractor", region=None)
    contractor_id = await page.get_by_label("Contractor id").input_value()  # filled in from the dev token
    assert str(uuid.UUID(contractor_id)) == contractor_id
    await expect(page.get_by_test_id("groups")).to_have_text(f"contractor/{contractor_id}")
    await expect_resume(page, "fresh", replayed=0)

    event = {**job_assigned(region="south-america"), "contractorId": contractor_id}
    await publish(service, event)
    position = await expect_row(page, event)
    await expect_position(page, position)
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
    await expect_resume(page, "fresh", replayed=0)
    _, server_side = server_transport(service)
    assert server_side == Transport(transport)
    event = job_assigned()
    await publish(service, event)
    position = await expect_row(page, event)
    await expect_position(page, position)


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


@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
async def test_resumes_after_a_dropped_connection(
    service: RunningService, page: Page, transport: str
) -> None:
    """The server drops every connection; the console reconnects and resumes: what was published
    meanwhile appears once each, in order, and so does what comes after."""
    await open_console(page, service)
    await connect(page, transport=transport)
    await expect_resume(page, "fresh")
    before = recommendation_ready()
    await publish(service, before)
    await expect_row(page, before)
    first_id, _ = server_transport(service)
    await page.evaluate(RECORD_STATES)

    service.runtime.manager.dispose_all("test")
    await service.next_closed()
    away = [job_assigned(), recommendation_ready(), job_assigned()]
    await publish(service, *away)

    await expect_resume(page, "recovered", timeout=RECONNECT_TIMEOUT_MS)
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
    second_id, _ = server_transport(service)
    assert second_id != first_id
    await expect(page.get_by_test_id("connection-id")).to_have_text(second_id)
    assert service.runtime.lifetime.group_size(f"dispatch/{REGION}") == 1
    assert await page.evaluate("window.seenStates") == ["reconnecting", "connected"]

    after = recommendation_ready()
    await publish(service, after)
    last = await expect_row(page, after)
    await expect_rows(page, [before, *away, after])
    await expect_position(page, last)
    await expect(page.get_by_test_id("replay-notice")).to_be_hidden()


async def test_resumes_after_a_restart_of_the_service(make_settings: SettingsMaker, page: Page) -> None:
    """A rolling restart: the service closes every connection (reconnect allowed) and stops; events are
    published while it is down; it comes back on the same port, reads them from the stream, and the
    console resumes with recovered: true — the events replayed once each, in order."""
    settings = make_settings()
    async with console_service(settings) as first:
        port = int(first.url.rsplit(":", 1)[1])
        await open_console(page, first)
        await connect(page, transport="WebSockets")
        before = [recommendation_ready(), job_assigned()]
        await publish(first, *before)
        for event in before:
            await expect_row(page, event)
        await page.evaluate(RECORD_STATES)
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "reconnecting")
    away = [job_assigned(), recommendation_ready(), recommendation_ready()]
    await publish(settings, *away)

    async with console_service(settings, port=port) as second:
        await expect_resume(page, "recovered", timeout=RECONNECT_TIMEOUT_MS)
        await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "connected")
        await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
        await expect_rows(page, [*before, *away])
        head = second.runtime.journal.head
        assert head is not None
        await expect_position(page, str(head))
        assert (await page.evaluate("window.seenStates"))[-1] == "connected"
        await expect(page.get_by_test_id("replay-notice")).to_be_hidden()

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "console.png"), full_page=True)


async def test_a_reload_resumes_from_the_stored_position(service: RunningService, page: Page) -> None:
    await open_console(page, service)
    await connect(page, region=f"{REGION}, south-america")
    groups = f"dispatch/{REGION}, dispatch/south-america"
    await expect(page.get_by_test_id("groups")).to_have_text(groups)
    seen = recommendation_ready(region="south-america")
    await publish(service, seen)
    kept = await expect_row(page, seen)
    await expect_position(page, kept)

    # The tab leaves the console; events are published meanwhile; it comes back.
    await page.goto("about:blank")
    await service.next_closed()
    away = [job_assigned(), recommendation_ready(region="south-america")]
    await publish(service, *away)
    await read_up_to(service, offset(kept) + len(away))
    await page.goto(f"{service.url}/console/")
    # The form is restored and the page connects again by itself, resuming from the kept position.
    await expect(page.get_by_label("Regions")).to_have_value(f"{REGION}, south-america")
    await expect_resume(page, "recovered", replayed=2)
    await expect(page.get_by_test_id("groups")).to_have_text(groups)
    await expect_rows(page, away)  # not the event seen before: it is before the position
    last = await expect_row(page, away[-1])
    await expect_position(page, last)

    # A reload while connected: resumes again from where it was, nothing to replay.
    await page.reload()
    await service.next_closed()
    await expect_resume(page, "recovered", replayed=0)
    await expect_position(page, last)
    await expect(page.get_by_test_id("event-row")).to_have_count(0)
    event = job_assigned()
    await publish(service, event)
    await expect_rows(page, [event])

    # "Forget position": the next Connect starts afresh (and a fresh start shows no notice).
    await disconnect(page, service)
    await expect(page.get_by_test_id("position-note")).to_contain_text("stored")
    await page.get_by_role("button", name="Forget position").click()
    await expect_position(page, "—")
    await expect(page.get_by_test_id("forget-position")).to_be_disabled()
    await page.reload()  # disconnected when it was reloaded: stays disconnected
    await expect(page.get_by_test_id("state")).to_have_attribute("data-state", "disconnected")
    await expect_position(page, "—")
    await connect(page, region=None)  # the restored form
    await expect_resume(page, "fresh", replayed=0)
    await expect(page.get_by_test_id("replay-notice")).to_be_hidden()
    await expect(page.get_by_test_id("errors").locator("li")).to_have_count(0)


async def test_an_event_already_shown_is_not_shown_again(service: RunningService, page: Page) -> None:
    """A resume from a position older than what the table shows (another tab of the console kept an
    older one for the same hub URL and groups) replays events already shown: each stays once."""
    await open_console(page, service)
    await connect(page)
    events = [recommendation_ready(), job_assigned()]
    await publish(service, *events)
    first = await expect_row(page, events[0])
    await expect_row(page, events[1])
    await disconnect(page, service)
    rewound = await page.evaluate(REWIND_STORED_POSITIONS, first)
    assert rewound == 1
    await page.get_by_label("Regions").fill(REGION)  # the form shows what it would resume from
    await expect_position(page, first)

    await connect(page)
    await expect_resume(page, "recovered", replayed=1)
    later = recommendation_ready()
    await publish(service, later)
    await expect_row(page, later)
    await expect_rows(page, [*events, later])


async def test_what_cannot_be_replayed_is_announced_and_marked(
    make_settings: SettingsMaker, page: Page
) -> None:
    """Away for more events than the server replays: recovered is false, the page says how many
    could not be replayed and marks the gap in the event list; live events go on above it."""
    async with console_service(make_settings(replay_max_events=2)) as service:
        await open_console(page, service)
        await connect(page)
        before = recommendation_ready()
        await publish(service, before)
        kept = await expect_row(page, before)
        await disconnect(page, service)

        away = [recommendation_ready(), job_assigned(), recommendation_ready()]
        await publish(service, *away)
        await read_up_to(service, offset(kept) + len(away))
        await connect(page)
        await expect_resume(page, "cap", replayed=0)
        await expect(page.get_by_test_id("resume")).to_contain_text("not recovered — cap")
        notice = page.get_by_test_id("replay-notice")
        await expect(notice).to_be_visible()
        await expect(notice).to_contain_text(
            "Up to 3 events could not be replayed (more than the server replays at once)"
            " — reload from the source of truth"
        )
        await expect(page.get_by_test_id("events")).to_have_attribute("data-gap", "true")
        await expect(page.get_by_test_id("gap-row")).to_have_count(1)
        head = service.runtime.journal.head
        assert head is not None
        await expect_position(page, str(head))

        after = job_assigned()
        await publish(service, after)
        await expect_row(page, after)
        await expect_rows(page, [before, after])
        # Newest first: the live event, the gap, then what was shown before it.
        rows = page.locator("#event-rows > tr")
        await expect(rows).to_have_count(3)
        await expect(rows.nth(0)).to_have_attribute("data-job-id", after["jobId"])
        await expect(rows.nth(1)).to_have_attribute("data-testid", "gap-row")
        await expect(rows.nth(2)).to_have_attribute("data-job-id", before["jobId"])

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(ARTIFACTS / "console-gap.png"), full_page=True)


@pytest.mark.tools
async def test_console_through_nginx_in_front_of_two_instances(tmp_path: Path, page: Page) -> None:
    """config/nginx.conf as shipped: every request of a connection reaches one instance, on every
    transport, and SSE events are not held back by proxy buffering; each Connect resumes from the
    position the previous one kept, whichever instance it reaches (both read the same log)."""
    key_dir = tmp_path / "dev-keys"  # shared, as the compose volume: a token from either works on both
    async with (
        running_service(dev_settings(key_dir, instance_id="realtime-1")) as one,
        running_service(dev_settings(key_dir, instance_id="realtime-2")) as two,
        running_nginx(tmp_path / "nginx", [s.url.removeprefix("http://") for s in (one, two)]) as proxy,
    ):
        log = SharedLog(one, two)
        await page.goto(f"{proxy}/console/")
        for attempt, transport in enumerate(("ServerSentEvents", "LongPolling", "WebSockets")):
            await connect(page, transport=transport)
            await expect(page.get_by_test_id("transport-in-use")).to_have_text(transport)
            await expect(page.get_by_test_id("groups")).to_have_text(f"dispatch/{REGION}")
            await expect_resume(page, "recovered" if attempt else "fresh", replayed=0)
            serving = [service for service in (one, two) if len(service.runtime.manager)]
            assert len(serving) == 1, "the connection's requests were spread over both instances"
            event = recommendation_ready()
            log.push(serving[0], event)
            position = await expect_row(page, event)
            await expect_position(page, position)
            await disconnect(page, serving[0])
