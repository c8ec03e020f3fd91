"""The entry points as an operator meets them: configuration errors, start, SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.tokens import TokenFactory

ROOT = Path(__file__).resolve().parent.parent


def _env(**values: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "SYSTEMROOT", "VIRTUAL_ENV")}
    return {**keep, "PYTHONPATH": str(ROOT), **values}


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
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(env: dict[str, str], expected: str) -> None:
    result = _run(_env(**env))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_console_script_serves_and_exits_0_on_sigterm(token_factory: TokenFactory, tmp_path: Path) -> None:
    port = _free_port()
    script = Path(sys.executable).parent / "smartscheduler-realtime"
    env = _env(
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        AUTH_JWKS_URL=token_factory.jwks_url,
        AUTH_ISSUER=token_factory.issuer,
        AUTH_AUDIENCE=token_factory.audience,
        RABBITMQ_URL="amqp://guest:guest@127.0.0.1:1/",  # no broker: the hub must serve regardless
        INSTANCE_ID=f"cli-test-{port}",
        LOG_FORMAT="json",
    )
    process = subprocess.Popen(
        [str(script)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as response:
                    assert response.status == 200
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.1)  # polling a starting process: there is no event to await
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate()
    assert b"service.starting" in stderr
