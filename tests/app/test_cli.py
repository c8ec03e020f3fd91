"""The entry points as an operator meets them: configuration errors, start, SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest

from tests.support.instances import free_port, service_process_env, wait_healthy
from tests.support.tokens import TokenFactory
from tests.support.wire import RawHubClient

ROOT = Path(__file__).resolve().parents[2]


def _run(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "configuration error: AUTH_JWKS_URL is required"),
        (
            {"AUTH_DEV_MODE": "true", "HTTP_PORT": "eighty"},
            "configuration error: HTTP_PORT: Input should be a valid integer",
        ),
        (
            {"AUTH_DEV_MODE": "true", "CORS_ORIGINS": "*"},
            "configuration error: CORS_ORIGINS: '*' cannot be allowed",
        ),
        (
            {"AUTH_JWKS_URL": "ftp://x/jwks.json", "AUTH_ISSUER": "i", "AUTH_AUDIENCE": "a"},
            "configuration error: AUTH_JWKS_URL: must be an https://, http:// or file:// URL",
        ),
        ({"AUTH_DEV_MODE": "true", "RABBITMQ_URL": "http://x"}, "configuration error: RABBITMQ_URL"),
        ({"AUTH_DEV_MODE": "true", "LOG_FORMAT": "xml"}, "configuration error: LOG_FORMAT"),
        (
            {"AUTH_DEV_MODE": "true", "LOG_LEVEL": "verbose"},
            "configuration error: LOG_LEVEL: 'verbose' is not one of",
        ),
        (
            {"AUTH_DEV_MODE": "true", "HUB_TRANSPORTS": ""},
            "configuration error: HUB_TRANSPORTS: List should have at least 1 item",
        ),
        (
            {"AUTH_DEV_MODE": "true", "HUB_SHUTDOWN_DRAIN_SECONDS": "10", "SHUTDOWN_TIMEOUT_SECONDS": "10"},
            "configuration error: HUB_SHUTDOWN_DRAIN_SECONDS must be less than SHUTDOWN_TIMEOUT_SECONDS",
        ),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(env: dict[str, str], expected: str) -> None:
    result = _run(service_process_env(**env))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]


async def test_console_script_serves_and_sigterm_says_goodbye_and_exits_0(
    token_factory: TokenFactory, tmp_path: Path
) -> None:
    """Operators' view of a deploy: SIGTERM → every client gets Close(allowReconnect) → exit 0."""
    port = free_port()
    script = Path(sys.executable).parent / "smartscheduler-realtime"
    env = service_process_env(
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        AUTH_JWKS_URL=token_factory.jwks_url,
        AUTH_ISSUER=token_factory.issuer,
        AUTH_AUDIENCE=token_factory.audience,
        RABBITMQ_URL="amqp://guest:guest@127.0.0.1:1/",  # no broker: the hub must serve regardless
        INSTANCE_ID=f"cli-test-{port}",
        LOG_FORMAT="json",
    )
    process = await asyncio.create_subprocess_exec(
        str(script), env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base, process)
            async with session.get(f"{base}/readyz") as response:
                assert response.status == 503  # no broker yet: not ready, but serving
                assert (await response.json())["checks"]["broker_connected"] is False
            client, _ = await RawHubClient.connect(
                session, f"{base}/hub/recommendations", token_factory.dispatcher()
            )
            process.send_signal(signal.SIGTERM)
            assert await client.next_of_type(7) == {"type": 7, "allowReconnect": True}
            assert await client.wait_closed() == 1000
        assert await asyncio.wait_for(process.wait(), 20) == 0
    finally:
        if process.returncode is None:
            process.kill()
        _, stderr = await process.communicate()
    assert b"service.starting" in stderr
    assert b"service.stopped" in stderr


def test_dev_token_is_refused_outside_development_mode(token_factory: TokenFactory) -> None:
    production = service_process_env(
        AUTH_JWKS_URL=token_factory.jwks_url,
        AUTH_ISSUER=token_factory.issuer,
        AUTH_AUDIENCE=token_factory.audience,
    )
    result = subprocess.run(
        [sys.executable, "-m", "service", "dev-token", "--role", "dispatcher", "--region", "north-america"],
        env=production,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert "AUTH_DEV_MODE" in result.stderr


def test_dev_token_mints_a_token_the_dev_service_accepts(tmp_path: Path) -> None:
    from service.auth import build_auth
    from tests.support.server import dev_settings

    env = service_process_env(AUTH_DEV_MODE="true", AUTH_DEV_KEY_DIR=str(tmp_path / "keys"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "service",
            "dev-token",
            "--role",
            "dispatcher",
            "--region",
            "north-america,europe",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    token = result.stdout.strip()

    async def validate() -> object:
        auth = build_auth(dev_settings(tmp_path / "keys"))
        await auth.start()
        try:
            return await auth.validator.validate(token)
        finally:
            await auth.close()

    principal = asyncio.run(validate())
    assert principal.roles == frozenset({"Dispatcher"})  # type: ignore[attr-defined]
    assert principal.regions == frozenset({"north-america", "europe"})  # type: ignore[attr-defined]
