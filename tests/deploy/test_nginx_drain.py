"""A rolling restart behind ``config/nginx.conf`` as shipped: the clients of a draining instance
reconnect to the other one at once, not after the draining one has gone."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import shutdown
from tests.support.jsclient import NodeDriver
from tests.support.nginx import running_nginx
from tests.support.server import hub_settings, running_service
from tests.support.tokens import TokenFactory


@pytest.mark.tools
@pytest.mark.parametrize("transport", ["WebSockets", "ServerSentEvents", "LongPolling"])
async def test_clients_of_a_draining_instance_reconnect_to_the_other_at_once(
    tmp_path: Path, js: NodeDriver, token_factory: TokenFactory, transport: str
) -> None:
    settings = hub_settings(token_factory)
    async with (
        running_service(settings) as one,
        running_service(settings) as two,
        running_nginx(tmp_path / "nginx", [s.url.removeprefix("http://") for s in (one, two)]) as proxy,
    ):
        # One retry, a minute later: only the first attempt can pass within the test's wait.
        client = await js.connect(
            f"{proxy}/hub/recommendations",
            token_factory.dispatcher(),
            transport=transport,
            automaticReconnect=[0, 60_000],
            listen=["JobAssigned"],
        )
        (draining,) = [s for s in (one, two) if len(s.runtime.manager)]
        (staying,) = [s for s in (one, two) if s is not draining]
        # SIGTERM's first steps: no new connections here, every client told to reconnect elsewhere.
        # The instance stays up meanwhile (draining), answering 503 to negotiate and 404 for ids it
        # no longer has: nginx must try the other instance for those, not hand them to the client.
        await shutdown.begin(draining.runtime)
        await client.next_event("reconnecting", timeout=10)
        reconnected = await client.next_event("reconnected", timeout=10)
        assert len(staying.runtime.manager) == 1
        assert reconnected["connectionId"] != client.connection_id
        await client.invoke("JoinDispatchGroup", "north-america")
        assert staying.runtime.lifetime.send_groups(["dispatch/north-america"], "JobAssigned", {"n": 1}) == 1
        assert (await client.next_message("JobAssigned"))["args"] == [{"n": 1}]
        await client.stop()
