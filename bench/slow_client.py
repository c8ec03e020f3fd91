"""``python -m bench.slow_client``: what a client that stops reading costs, and what bounding it costs.

Loopback only; stops by itself (a few minutes at the defaults). For each configuration of the kernel
send buffer (``HUB_SOCKET_SEND_BUFFER_BYTES``: 0 = the kernel's own, growing, default; and the
bound, 65536 by default), a fresh service process (the hub alone, no broker: an in-process feeder
calls the lifetime manager at a steady rate, as the consumer does) is measured twice:

1. **silent**: one WebSocket client joins a group and stops reading (a raw socket, the kernel's
   default receive buffer, reading paused). Events of ~300 bytes go to its group at each of
   ``--silent-rates`` until the service drops it: seconds and events until dropped, and the reason.
2. **healthy**: ``--clients`` WebSocket clients that read everything, in groups of ``--group-size``,
   get ``--rate`` events/s for ``--seconds``: deliveries/s received and the service's CPU seconds
   per 1,000 deliveries; then a burst phase (the feeder as fast as it can for ``--burst-seconds``)
   gives the most deliveries/s the service reaches.

``--service-root DIR`` runs the service from another checkout (e.g. ``git archive`` of an older
commit) to measure the code before a change. Prints a table; ``--output FILE`` also writes JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

from bench.service import mint_tokens
from bench.wire import masked_frame, raise_fd_limit

ROOT = Path(__file__).resolve().parent.parent
HUB = "/hub/recommendations"
_RS = b"\x1e"
_HANDSHAKE = b'{"protocol":"json","version":1}\x1e'

# The service side: the hub on a TCP listener, and a feeder driven by JSON lines on stdin. It uses only
# create_app and the lifetime manager, so that it runs against older checkouts too.
SERVER = r"""
import asyncio, json, sys, time
from aiohttp import web
from config.settings import load_settings
from service.app import create_app
from service.logs import configure_logging
from service.runtime import HUB

BODY = {"type": "RecommendationReady", "jobId": "00000000-0000-4000-8000-000000000000",
        "note": "x" * 220}

async def feed(runtime, groups, rate, seconds, until_empty=None):
    loop = asyncio.get_running_loop()
    lifetime = runtime.lifetime
    sent = delivered = 0
    cpu0, start = time.process_time(), loop.time()
    tick = 0.01
    while True:
        now = loop.time()
        if now - start >= seconds:
            break
        if until_empty is not None and lifetime.group_size(until_empty) == 0:
            break
        due = int((now - start) * rate) + 1 if rate > 0 else sent + 50
        while sent < due:
            delivered += lifetime.send_groups([groups[sent % len(groups)]], "RecommendationReady", BODY)
            sent += 1
        await asyncio.sleep(tick if rate > 0 else 0)
    return {"sent": sent, "delivered": delivered, "seconds": loop.time() - start,
            "cpu": time.process_time() - cpu0}

async def main():
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    app = create_app(settings, consumer_factory=False)
    runtime = app[HUB]
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    await web.TCPSite(runner, settings.http_host, settings.http_port).start()
    reasons = []
    on_closed = runtime.handler.on_closed
    def record(connection):
        reasons.append([connection.connection_id, connection.close_reason])
        on_closed(connection)
    runtime.handler.on_closed = record
    print("BENCH " + json.dumps({"ready": True}), flush=True)
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    await asyncio.get_running_loop().connect_read_pipe(lambda: protocol, sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if command["cmd"] == "feed":
            result = await feed(runtime, command["groups"], command["rate"], command["seconds"],
                                command.get("until_empty"))
            result["closed"] = list(reasons)
            print("BENCH " + json.dumps(result), flush=True)
    await runner.cleanup()

asyncio.run(main())
"""


def log(message: str) -> None:
    print(f"[slow_client {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Server:
    """The service process and its feeder's command pipe."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, root: Path, env: dict[str, str], log_path: Path) -> Server:
        stderr = log_path.open("ab")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SERVER, env=env, cwd=root,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
        )  # fmt: skip
        server = cls(process)
        ready = await server._reply(60)
        assert ready.get("ready"), ready
        return server

    async def _reply(self, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        while True:  # the feeder's replies start with BENCH; anything else is the service's output
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
            if not line:
                raise RuntimeError("the service process exited; see its log")
            if line.startswith(b"BENCH "):
                result: dict[str, Any] = json.loads(line[6:])
                return result

    async def feed(self, timeout: float, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": "feed", **command}).encode() + b"\n")
        await self.process.stdin.drain()
        return await self._reply(timeout)

    async def stop(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


async def _negotiate(session: aiohttp.ClientSession, base: str, token: str) -> tuple[str, str]:
    """(connection token, connection id)."""
    async with session.post(
        f"{base}{HUB}/negotiate",
        params={"negotiateVersion": "1"},
        headers={"Authorization": f"Bearer {token}"},
    ) as response:
        body = await response.json()
        return str(body["connectionToken"]), str(body["connectionId"])


def _upgrade(port: int, connection_token: str, token: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {HUB}?id={connection_token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


def _join(group: str) -> bytes:
    invocation = {"type": 1, "target": "JoinDispatchGroup", "arguments": [group], "invocationId": "0"}
    return masked_frame(_HANDSHAKE + json.dumps(invocation).encode() + _RS)


class Reader(asyncio.Protocol):
    """A healthy client: reads everything, counts records (0x1E) after its join's completion."""

    def __init__(self) -> None:
        self.connection_id = ""
        self.records = 0
        self.joined = asyncio.get_running_loop().create_future()
        self._head = b""
        self.transport: asyncio.Transport | None = None
        self.paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.joined.done():
            self._head += data
            if b'"invocationId":"0"' in self._head:
                self.joined.set_result(None)
            return
        self.records += data.count(_RS)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.joined.done():
            self.joined.set_exception(ConnectionError("closed before the join completed"))


async def _connect(session: aiohttp.ClientSession, port: int, token: str, group: str) -> Reader:
    connection_token, connection_id = await _negotiate(session, f"http://127.0.0.1:{port}", token)
    loop = asyncio.get_running_loop()
    _, reader = await loop.create_connection(Reader, "127.0.0.1", port)
    reader.connection_id = connection_id
    assert reader.transport is not None
    reader.transport.write(_upgrade(port, connection_token, token) + _join(group))
    await asyncio.wait_for(reader.joined, 20)
    return reader


async def measure(options: argparse.Namespace, send_buffer: int, workdir: Path) -> dict[str, Any]:
    key_dir = workdir / "keys"
    [token] = await asyncio.to_thread(mint_tokens, key_dir, ["bench-slow-client"])
    port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "VIRTUAL_ENV")},
        "PYTHONPATH": str(options.service_root),
        "HTTP_HOST": "127.0.0.1",
        "HTTP_PORT": str(port),
        "AUTH_DEV_MODE": "true",
        "AUTH_DEV_KEY_DIR": str(key_dir),
        "LOG_LEVEL": "WARNING",
        "HUB_MAX_CONNECTIONS_PER_USER": "0",
        "HUB_MAX_NEGOTIATES_PER_USER_PER_MINUTE": "0",
        "HUB_TRANSPORT_SEND_TIMEOUT": str(options.send_timeout),
        "HUB_SOCKET_SEND_BUFFER_BYTES": str(send_buffer),
    }
    server = await Server.start(options.service_root, env, workdir / f"service-{send_buffer}.log")
    result: dict[str, Any] = {"send_buffer": send_buffer}
    try:
        async with aiohttp.ClientSession() as session:
            # 1. A silent client, once per rate: slowly, the send timeout notices; fast, the buffer bound.
            result["silent"] = []
            for rate in options.silent_rates:
                silent = await _connect(session, port, token, "silent")
                assert silent.transport is not None
                silent.transport.pause_reading()  # the kernel's receive buffer fills, then the window shuts
                fed = await server.feed(
                    options.silent_max_seconds + 30, groups=["dispatch/silent"], rate=rate,
                    seconds=options.silent_max_seconds, until_empty="dispatch/silent",
                )  # fmt: skip
                closed = [reason for closed_id, reason in fed["closed"] if closed_id == silent.connection_id]
                result["silent"].append({
                    "rate": rate,
                    "events": fed["sent"],
                    "seconds": round(fed["seconds"], 2),
                    "dropped": bool(closed),
                    "reason": closed[0] if closed else None,
                })  # fmt: skip
                silent.transport.abort()
                log(f"send_buffer={send_buffer}: silent client {result['silent'][-1]}")

            # 2. Healthy clients.
            groups = [f"dispatch/g{index}" for index in range(max(1, options.clients // options.group_size))]
            readers = [
                await _connect(session, port, token, groups[index % len(groups)].split("/")[1])
                for index in range(options.clients)
            ]
            for phase, rate, seconds in (
                ("steady", options.rate, options.seconds),
                ("burst", 0, options.burst_seconds),
            ):
                before = sum(reader.records for reader in readers)
                fed = await server.feed(seconds + 60, groups=groups, rate=rate, seconds=seconds)
                healthy = {reader.connection_id for reader in readers}
                await asyncio.sleep(0.5)  # let the last bytes arrive before counting
                received = sum(reader.records for reader in readers) - before
                result[phase] = {
                    "deliveries": fed["delivered"],
                    "received": received,
                    "deliveries_per_s": round(fed["delivered"] / fed["seconds"]),
                    "cpu_per_1000": round(1000 * fed["cpu"] / max(1, fed["delivered"]), 4),
                    "dropped": sum(1 for closed_id, _ in fed["closed"] if closed_id in healthy),
                }
                log(f"send_buffer={send_buffer}: {phase} {result[phase]}")
            for reader in readers:
                if reader.transport is not None:
                    reader.transport.close()
    finally:
        await server.stop()
    return result


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def table(results: list[dict[str, Any]], options: argparse.Namespace) -> str:
    lines = [
        f"silent WebSocket client (~300 B events), HUB_TRANSPORT_SEND_TIMEOUT={options.send_timeout:g}; "
        f"{options.clients} healthy clients in groups of {options.group_size}, steady {options.rate:g} ev/s",
        "",
        "| HUB_SOCKET_SEND_BUFFER_BYTES | silent client: events / seconds until dropped (reason), per rate "
        "| steady: deliveries/s | CPU s / 1,000 | burst: deliveries/s | CPU s / 1,000 |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        steady, burst = result["steady"], result["burst"]
        silent = "; ".join(
            f"{s['rate']:g} ev/s: {s['events']} / {s['seconds']} s ({s['reason']})"
            if s["dropped"]
            else f"{s['rate']:g} ev/s: not dropped after {s['events']} / {s['seconds']} s"
            for s in result["silent"]
        )
        lines.append(
            f"| {result['send_buffer']} | {silent} | {steady['deliveries_per_s']} | {steady['cpu_per_1000']} "
            f"| {burst['deliveries_per_s']} | {burst['cpu_per_1000']} |"
        )
    return "\n".join(lines)


async def run(options: argparse.Namespace) -> list[dict[str, Any]]:
    raise_fd_limit()
    with tempfile.TemporaryDirectory(prefix="bench-slow-client-") as directory:
        workdir = Path(directory)
        return [await measure(options, size, workdir / uuid.uuid4().hex[:6]) for size in options.send_buffers]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_client", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--send-buffers", default="0,65536", help="HUB_SOCKET_SEND_BUFFER_BYTES values to compare"
    )
    parser.add_argument("--send-timeout", type=float, default=5.0, help="HUB_TRANSPORT_SEND_TIMEOUT")
    parser.add_argument(
        "--silent-rates", default="50,200,2000", help="events/s to the silent client, one run per rate"
    )
    parser.add_argument("--silent-max-seconds", type=float, default=90.0, help="give up on the drop after")
    parser.add_argument("--clients", type=int, default=300, help="healthy clients")
    parser.add_argument("--group-size", type=int, default=10)
    parser.add_argument("--rate", type=float, default=300.0, help="events/s in the steady phase")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the steady phase")
    parser.add_argument("--burst-seconds", type=float, default=3.0, help="length of the burst phase")
    parser.add_argument("--service-root", type=Path, default=ROOT, help="checkout to run the service from")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    options = parser.parse_args(argv)
    options.send_buffers = [int(value) for value in options.send_buffers.split(",")]
    options.silent_rates = [float(value) for value in options.silent_rates.split(",")]
    options.service_root = options.service_root.resolve()
    results = asyncio.run(run(options))
    print(table(results, options))
    if options.output is not None:
        options.output.parent.mkdir(parents=True, exist_ok=True)
        options.output.write_text(json.dumps({"options": {k: str(v) for k, v in vars(options).items()},
                                              "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
