"""Real service processes and a fail-over proxy in front of them, for the continuity tests; waiting
for any test's own ``python -m service`` process to serve (``wait_healthy``).

``ServiceProcess`` runs ``python -m service`` exactly as production does (settings from the
environment) and can be stopped the three ways an instance goes away: SIGTERM (a deploy), SIGKILL
(a crash), or — through ``FailoverProxy.vanish`` — a host that stops answering without closing
anything (no FIN, no RST: only the clients' server timeout notices).

``FailoverProxy`` is what a load balancer with health checks does, reduced to TCP: every new
connection goes to the first backend that is neither vanished nor refusing, so all requests of a
connection reach one instance as long as it lives (sticky enough for SSE and Long Polling), and
clients land on the next instance when it is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["FailoverProxy", "ServiceProcess", "free_port", "service_process_env", "wait_healthy"]

_ROOT = Path(__file__).resolve().parents[2]


def service_process_env(**values: str) -> dict[str, str]:
    """A clean environment for a test's own ``python -m service``: only what a process needs from
    ours (no settings leak in from the test run), the checkout on ``PYTHONPATH``, then ``values``."""
    keep = ("PATH", "HOME", "LANG", "SYSTEMROOT", "VIRTUAL_ENV")
    return {**{k: v for k, v in os.environ.items() if k in keep}, "PYTHONPATH": str(_ROOT), **values}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_healthy(
    session: aiohttp.ClientSession, base: str, process: asyncio.subprocess.Process, *, timeout: float = 20.0
) -> None:
    """Until ``base`` answers ``/healthz`` with 200: the service serves (ready or not, broker or not).

    Fails as soon as ``process`` exits, or after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:  # polling a starting process: there is no event to await
        try:
            async with session.get(f"{base}/healthz") as response:
                assert response.status == 200
                return
        except aiohttp.ClientConnectionError:
            assert time.monotonic() < deadline, "the service did not start"
            assert process.returncode is None, f"the service exited with {process.returncode}"
            await asyncio.sleep(0.1)


class ServiceProcess:
    """``python -m service`` on ``port`` with ``settings`` (field names) as its environment."""

    def __init__(self, name: str, settings: Mapping[str, Any], *, port: int, log_dir: Path) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}.log"
        self._env = {
            **{key: value for key, value in os.environ.items() if not key.isupper() or key in _KEEP},
            **{key.upper(): _env_value(value) for key, value in settings.items()},
            "HTTP_HOST": "127.0.0.1",
            "HTTP_PORT": str(port),
        }
        self._process: asyncio.subprocess.Process | None = None
        self._log: Any = None

    async def start(self) -> None:
        """Start (again, after it stopped: a restart with the same settings and port)."""
        if self._log is None:
            self._log = self.log_path.open("ab")
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", env=self._env, stdout=self._log, stderr=self._log
        )

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.returncode is None

    async def wait_ready(self, timeout: float = 60.0) -> None:
        """Until ``/readyz`` answers 200 (broker connected, history loaded)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:  # polling a starting process: there is no event to await
                assert self.running, f"{self.name} exited: see {self.log_path}"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{self.url}/readyz") as response:
                        if response.status == 200:
                            return
                assert time.monotonic() < deadline, (
                    f"{self.name} not ready after {timeout} s: {self.log_path}"
                )
                await asyncio.sleep(0.05)

    def kill(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        assert self._process is not None
        self._process.send_signal(signal.SIGTERM)

    async def wait(self, timeout: float = 30.0) -> int:
        assert self._process is not None
        return await asyncio.wait_for(self._process.wait(), timeout)

    async def stop(self) -> None:
        """Whatever state it is in: gone after this (tests' cleanup)."""
        if self.running:
            self.terminate()
            try:
                await self.wait(15)
            except TimeoutError:
                self.kill()
                await self.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


_KEEP = frozenset({"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "VIRTUAL_ENV", "PYTHONPATH"})


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


class FailoverProxy:
    """127.0.0.1:<port> → the first live backend; ``vanish(i)`` turns backend ``i`` into a black hole."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self._vanished: set[int] = set()
        self._server: asyncio.Server | None = None
        self._links: dict[int, set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]]] = {}
        self._hanging: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()  # closed by close()
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections: dict[int, int] = dict.fromkeys(backends, 0)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def vanish(self, backend: int) -> None:
        """The host stops answering: established connections hang (nothing is closed or reset, no byte
        passes in either direction), and no new connection is sent there."""
        self._vanished.add(backend)

    def restore(self, backend: int) -> None:
        self._vanished.discard(backend)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for client, upstream in [*self._hanging, *(link for links in self._links.values() for link in links)]:
            client.transport.abort()
            upstream.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for backend in self.backends:
            if backend in self._vanished:
                continue
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", backend)
            except OSError:
                continue  # refused: that instance is down, try the next
            self.connections[backend] += 1
            link = (writer, up_writer)
            self._links.setdefault(backend, set()).add(link)
            for source, sink in ((reader, up_writer), (up_reader, writer)):
                task = asyncio.create_task(self._pipe(backend, source, sink, link))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        writer.transport.abort()  # nobody is there

    async def _pipe(
        self,
        backend: int,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        link: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        try:
            while data := await source.read(65536):
                if backend in self._vanished:
                    await asyncio.Event().wait()  # swallow everything, forever, and close nothing
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._links.get(backend, set()).discard(link)
            if backend in self._vanished:
                self._hanging.add(link)  # a vanished host closes nothing; the test's cleanup does
            else:
                for side in link:
                    side.transport.abort()
