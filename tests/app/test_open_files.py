"""The process's open-file budget, as an operator meets it: the limit it starts with, the connections
it admits within that limit, and what a client beyond it is told.

Every WebSocket is one open file. Started under a low soft limit (a shell's or systemd's 1,024), the
service raises it to the hard limit at once; where the hard limit itself is low, it admits only as many
connections as leave a reserve for everything else it opens (the broker link, HTTP requests, /metrics),
and answers the next ones 503 instead of failing to accept them.
"""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.open_files import OpenFiles, connection_budget, reserve_for
from tests.support.instances import free_port, service_process_env, wait_healthy
from tests.support.tokens import TokenFactory
from tests.support.wire import RawHubClient

ROOT = Path(__file__).resolve().parents[2]
HUB = "/hub/recommendations"


def test_the_reserve_grows_with_the_limit_and_never_falls_below_64() -> None:
    assert reserve_for(300) == 64
    assert reserve_for(1024) == 64
    assert reserve_for(20_000) == 400


@pytest.mark.parametrize(
    ("configured", "soft", "expected"),
    [
        (0, 20_000, 19_600),  # unset: what the open-file limit leaves
        (5_000, 20_000, 5_000),  # below what the limit allows: as configured
        (50_000, 20_000, 19_600),  # above it: only what the limit allows
        (0, 300, 236),
        (0, 40, 1),  # a limit too low for any reserve still admits one
    ],
)
def test_the_connection_budget_is_the_configured_cap_within_what_the_limit_leaves(
    configured: int, soft: int, expected: int
) -> None:
    assert connection_budget(configured, OpenFiles(before=soft, soft=soft, hard=soft)) == expected


def _service_env(token_factory: TokenFactory, port: int) -> dict[str, str]:
    return service_process_env(
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        AUTH_JWKS_URL=token_factory.jwks_url,
        AUTH_ISSUER=token_factory.issuer,
        AUTH_AUDIENCE=token_factory.audience,
        RABBITMQ_URL="amqp://guest:guest@127.0.0.1:1/",  # no broker: the hub serves regardless
        INSTANCE_ID=f"open-files-{port}",
        LOG_FORMAT="json",
    )


async def _start(env: dict[str, str], soft: int, hard: int, log: Path) -> asyncio.subprocess.Process:
    """The service under the given limits; its log goes to ``log``, a file the test reads at the end
    (a pipe nobody reads fills with a few hundred connections' log lines, and the service then drops
    the lines that follow rather than wait: ``service/log_writer.py``)."""

    def limit() -> None:  # in the child, before it runs Python: the limits an operator's shell gives it
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    with log.open("wb") as out:  # the child keeps its own descriptor
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            env=env,
            cwd=ROOT,
            preexec_fn=limit,  # setrlimit only
            stdout=subprocess.DEVNULL,
            stderr=out,
        )


async def _stop(process: asyncio.subprocess.Process, log: Path) -> dict[str, Any]:
    """Stop the service; its ``process.open_files`` log record."""
    if process.returncode is None:
        process.terminate()
    await asyncio.wait_for(process.wait(), 30)
    return _open_files_record(log)


def _open_files_record(log: Path) -> dict[str, Any]:
    text = log.read_text()
    for line in text.splitlines():
        if '"process.open_files"' in line:
            record: dict[str, Any] = json.loads(line)
            return record
    raise AssertionError(f"no process.open_files record in the log:\n{text[-2000:]}")


def _open_files_limits(pid: int) -> list[str]:
    """Soft and hard, as the kernel has them for ``pid``."""
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    return next(row for row in limits if row.startswith("Max open files")).split()[3:5]


async def test_a_low_soft_limit_is_raised_to_the_hard_one_at_start(
    token_factory: TokenFactory, tmp_path: Path
) -> None:
    port = free_port()
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    log = tmp_path / "service.log"
    process = await _start(_service_env(token_factory, port), soft=256, hard=hard, log=log)
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, f"http://127.0.0.1:{port}", process)
        assert _open_files_limits(process.pid) == [str(hard), str(hard)]
    finally:
        record = await _stop(process, log)
    assert (record["before"], record["soft"], record["hard"]) == (256, hard, hard)


async def test_beyond_what_a_low_hard_limit_leaves_a_new_client_gets_503_and_the_others_stay_served(
    token_factory: TokenFactory, tmp_path: Path
) -> None:
    port = free_port()
    limit = 300
    budget = connection_budget(0, OpenFiles(before=limit, soft=limit, hard=limit))
    log = tmp_path / "service.log"
    process = await _start(_service_env(token_factory, port), soft=limit, hard=limit, log=log)
    base = f"http://127.0.0.1:{port}"
    clients: list[RawHubClient] = []
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await wait_healthy(session, base, process)
            for _ in range(budget):
                client, _ = await asyncio.wait_for(
                    RawHubClient.connect(session, base + HUB, token_factory.dispatcher()), 10
                )
                clients.append(client)
            headers = {"Authorization": f"Bearer {token_factory.dispatcher()}"}
            negotiate = f"{base}{HUB}/negotiate?negotiateVersion=1"
            async with session.post(negotiate, headers=headers) as response:
                assert response.status == 503
                assert "connection limit" in await response.text()
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
            # The connected clients are still served: the first and the last answer a hub call.
            for client in (clients[0], clients[-1]):
                await client.send({"type": 1, "target": "JoinDispatchGroup", "arguments": ["north-america"],
                                   "invocationId": "1"})  # fmt: skip
                assert await client.next_of_type(3) == {"type": 3, "invocationId": "1"}
            # A client that leaves makes room for the next.
            await clients.pop().ws.close()
            for _ in range(50):  # the close reaches the server's bookkeeping in a loop turn or two
                async with session.post(
                    f"{base}{HUB}/negotiate?negotiateVersion=1", headers=headers
                ) as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)
            assert response.status == 200
            for client in clients:
                await client.ws.close()
    finally:
        record = await _stop(process, log)
    assert (record["soft"], record["connections"]) == (limit, budget)
