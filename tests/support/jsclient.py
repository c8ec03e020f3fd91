"""The official @microsoft/signalr client (Node) as an async Python object for interop tests.

One Node process (``tests/js/driver.mjs``) hosts any number of hub connections; commands go in as
JSON lines, replies and client events come back as JSON lines. Nothing here interprets SignalR: the
real client does, and tests assert on what it reports.

Rule: a missing Node or ``npm ci`` fails the test loudly (never a skip). Tests that start the
driver are marked ``node`` (checked here; the ``js`` fixture adds it), so ``make unit`` never selects them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.markers import require_marker

__all__ = ["JsClientError", "JsConnection", "NodeDriver", "node_driver"]

JS_DIR = Path(__file__).resolve().parent.parent / "js"
DEFAULT_TIMEOUT = 15.0


class JsClientError(Exception):
    """The JS client rejected a command (its error text is the message)."""


def _require_node() -> str:
    require_marker("node", "Node.js")
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is required for the interop tests (install Node 20+)", pytrace=False)
    if not (JS_DIR / "node_modules" / "@microsoft" / "signalr").is_dir():
        pytest.fail(f"run `npm ci` in {JS_DIR} first (the official SignalR client is missing)", pytrace=False)
    return node


class NodeDriver:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self._process = process
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._events: dict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self._names = itertools.count(1)
        self._reader = asyncio.create_task(self._read())
        self.stderr_lines: list[str] = []
        self._stderr_reader = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls) -> NodeDriver:
        node = _require_node()
        process = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / "driver.mjs"),
            cwd=JS_DIR,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=16 * 1024 * 1024,
        )
        driver = cls(process)
        ready = await driver.next_event("", timeout=DEFAULT_TIMEOUT)
        assert ready["event"] == "ready", ready
        return driver

    async def _read(self) -> None:
        assert self._process.stdout is not None
        async for raw in self._process.stdout:
            message = json.loads(raw)
            if "id" in message:
                future = self._pending.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            else:
                self._events[message.get("name", "")].put_nowait(message)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(JsClientError("the Node driver exited"))

    async def _read_stderr(self) -> None:
        assert self._process.stderr is not None
        async for raw in self._process.stderr:
            self.stderr_lines.append(raw.decode(errors="replace").rstrip())

    async def command(self, cmd: str, *, timeout: float = DEFAULT_TIMEOUT, **fields: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command_id] = future
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps({"id": command_id, "cmd": cmd, **fields}).encode() + b"\n")
        await self._process.stdin.drain()
        reply = await asyncio.wait_for(future, timeout)
        if not reply.get("ok"):
            raise JsClientError(reply.get("error"))
        return reply

    async def next_event(self, name: str, *, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        return await asyncio.wait_for(self._events[name].get(), timeout)

    def pending_events(self, name: str) -> list[dict[str, Any]]:
        queue = self._events[name]
        items = []
        while not queue.empty():
            items.append(queue.get_nowait())
        return items

    async def connect(
        self,
        url: str,
        token: str | None,
        *,
        transport: str | Sequence[str] | None = "WebSockets",
        protocol: str = "json",
        listen: Sequence[str] = ("RecommendationReady", "JobAssigned"),
        timeout: float = DEFAULT_TIMEOUT,
        **options: Any,
    ) -> JsConnection:
        name = f"c{next(self._names)}"
        reply = await self.command(
            "connect",
            name=name,
            url=url,
            token=token,
            transport=transport,
            protocol=protocol,
            listen=list(listen),
            timeout=timeout,
            **options,
        )
        return JsConnection(self, name, reply.get("connectionId"))

    async def close(self) -> None:
        process = self._process
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in (self._reader, self._stderr_reader):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class JsConnection:
    def __init__(self, driver: NodeDriver, name: str, connection_id: str | None) -> None:
        self.driver = driver
        self.name = name
        self.connection_id = connection_id

    async def invoke(self, method: str, *args: Any, timeout: float = DEFAULT_TIMEOUT) -> Any:
        reply = await self.driver.command(
            "invoke", name=self.name, method=method, args=list(args), timeout=timeout
        )
        return reply.get("result")

    async def send(self, method: str, *args: Any) -> None:
        await self.driver.command("send", name=self.name, method=method, args=list(args))

    async def stop(self) -> None:
        await self.driver.command("stop", name=self.name)

    async def state(self) -> dict[str, Any]:
        return await self.driver.command("state", name=self.name)

    async def set_token(self, token: str) -> None:
        await self.driver.command("setToken", name=self.name, token=token)

    async def next_event(
        self, kind: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        """The next client event (message, reconnecting, reconnected, close), optionally of one kind."""
        while True:
            event = await self.driver.next_event(self.name, timeout=timeout)
            if kind is None or event["event"] == kind:
                return event

    async def next_message(
        self, target: str | None = None, *, timeout: float = DEFAULT_TIMEOUT
    ) -> dict[str, Any]:
        while True:
            event = await self.next_event("message", timeout=timeout)
            if target is None or event["target"] == target:
                return event

    def received(self) -> list[dict[str, Any]]:
        """Events already reported and not yet consumed (for "received nothing" assertions)."""
        return self.driver.pending_events(self.name)


@contextlib.asynccontextmanager
async def node_driver() -> AsyncIterator[NodeDriver]:
    driver = await NodeDriver.start()
    try:
        yield driver
    finally:
        await driver.close()
