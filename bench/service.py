"""Running this service for a benchmark: its environment, its launcher, readiness, and dev tokens.

Shared by the fan-out benchmark (``bench.cli``) and the flood benchmark (``bench.flood``) so that
both measure the service configured the same way: development auth with a key the benchmark mints
tokens from, its own stream and exchanges on the benchmark's broker (named by ``prefix``, deleted
afterwards), no consume grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from pathlib import Path

import aiohttp

from bench.procs import Child

__all__ = [
    "SERVICE_LAUNCHER",
    "mint_tokens",
    "service_env",
    "service_queues",
    "wait_server_ready",
    "wait_service_ready",
]

# The service's own entry point (``python -m service``) with the fd limit raised first.
SERVICE_LAUNCHER = (
    "import resource, sys\n"
    "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
    "from service.cli import main\n"
    "sys.exit(main(['serve']))\n"
)


def service_env(
    *,
    workdir: Path,
    key_dir: Path,
    port: int,
    amqp: str,
    prefix: str,
    exchange: str,
    prefetch: int | None,
    log_level: str = "WARNING",
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one benchmarked service process (``extra`` last: it wins)."""
    (workdir / "empty.env").write_text("")
    return {
        **os.environ,
        "CONFIG_FILE": str(workdir / "empty.env"),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "AUTH_DEV_MODE": "true",
        "AUTH_DEV_KEY_DIR": str(key_dir),
        "LOG_LEVEL": log_level,
        "RABBITMQ_URL": amqp,
        "INSTANCE_ID": "bench",
        "STREAM_NAME": f"{prefix}.events",
        "POSITION_QUEUE_PREFIX": f"{prefix}.position.",
        "RECOMMENDATIONS_EXCHANGE": exchange,
        "ASSIGNMENTS_EXCHANGE": f"{prefix}.assignments",
        "DEAD_LETTER_EXCHANGE": f"{prefix}.dlx",
        "DEAD_LETTER_QUEUE": f"{prefix}.dlq",
        "QUEUE_EXPIRES_MS": "60000",
        "CONSUME_GRACE_SECONDS": "0",
        **({} if prefetch is None else {"PREFETCH_COUNT": str(prefetch)}),
        **(extra or {}),
    }


def service_queues(prefix: str) -> tuple[list[str], list[str]]:
    """(queues, exchanges) a service started with ``service_env(prefix=...)`` declares, to delete."""
    return (
        [f"{prefix}.dlq", f"{prefix}.events", f"{prefix}.position.bench"],
        [f"{prefix}.assignments", f"{prefix}.dlx"],
    )


async def wait_http_ok(server: Child, url: str, timeout: float = 60.0) -> None:
    """Until ``url`` answers 200 (or ``server`` exits, or ``timeout``)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if not server.alive():
                raise RuntimeError(f"{server.name} exited; its log ends:\n{server.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready within {timeout:.0f} s:\n{server.log_tail()}")


async def wait_service_ready(server: Child, port: int, timeout: float = 60.0) -> None:
    """The service reads a stream: ready when ``/readyz`` says so (connected, history loaded)."""
    await wait_http_ok(server, f"http://127.0.0.1:{port}/readyz", timeout)


async def wait_server_ready(server: Child, port: int, *, service: bool) -> None:
    """The service: ``/readyz``. A comparison server (``bench.servers``) listens only once its feed
    consumes, so any answer will do (``/metrics``): a stream's declare-ok counts no consumers to poll."""
    await wait_http_ok(server, f"http://127.0.0.1:{port}/{'readyz' if service else 'metrics'}")


def mint_tokens(key_dir: Path, subjects: list[str], *, roles: tuple[str, ...] = ("Admin",)) -> list[str]:
    """Development tokens (4 h) signed by the key the service will load from ``key_dir``."""
    from service.auth import DevIssuer

    issuer = DevIssuer(key_dir)
    return [issuer.mint(subject=subject, roles=list(roles), ttl_seconds=4 * 3600) for subject in subjects]
