"""The load generator: thousands of raw WebSocket clients in one uvloop process.

``python -m bench.loadgen`` reads one JSON command per line on stdin and answers one JSON line on
stdout (``connect``, ``wait``, ``close``, ``quit``); the orchestrator (``bench.cli``) drives it. A run
may start several (``--loadgen-procs``, ``bench.procs.LoadGenPool``): each owns the clients
``first`` … ``first + n - 1`` and answers with its raw samples, which ``merge_storms`` and
``merge_waits`` combine into one result as if a single process had measured them all.

Each client is an ``asyncio.Protocol`` on one TCP connection that speaks its server's protocol only as
far as it must: SignalR — ``POST negotiate`` on a connection of its own (as a browser's fetch does),
the WebSocket upgrade, handshake, two ``JoinDispatchGroup`` invocations awaited by their completions;
Socket.IO — Engine.IO v4 open, namespace connect, two acknowledged ``join`` emits, ``3`` for every
ping ``2``;
raw — the upgrade with the groups in the query. Once joined, a frame is only searched for ``jobId``;
the id itself carries the publish time and phase (``bench.wire.job_id``), so a delivery costs a
``find`` and three ``int(…, 16)``. The client is ``bench.loadgen_client.Client``; this module is the
process around the clients: its commands, the storm, and merging what several processes measured.
"""

from __future__ import annotations

import asyncio
import sys
import time
from array import array
from typing import Any

import orjson

from bench.loadgen_client import Client, Stats, client_factory, negotiate
from bench.wire import now_us, raise_fd_limit


class LoadGenerator:
    def __init__(self) -> None:
        self.clients: list[Client] = []
        self.stats = Stats()
        self.lost = 0

    async def connect(self, spec: dict[str, Any]) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        count: int = spec["n"]
        first: int = spec.get("first", 0)  # this process's clients are first … first + count - 1
        timeout: float = spec.get("timeout", 60.0)
        concurrency: int = spec.get("concurrency", 100)
        durations = array("q")
        errors: dict[str, int] = {}
        retries = 0
        next_index = 0
        started = time.monotonic()
        deadline = started + timeout

        async def one(index: int) -> bool:
            nonlocal retries
            for attempt in range(3):
                begin = now_us()
                client = Client(self, spec, index)
                try:
                    if client.kind == "signalr":
                        client.connection_token, ticket = await asyncio.wait_for(
                            negotiate(spec, client.token), max(0.1, deadline - time.monotonic())
                        )
                        if ticket:
                            client.token = ticket  # as the official clients do (bench/NOTES.md)
                    await asyncio.wait_for(
                        loop.create_connection(client_factory(client), spec["host"], spec["port"]),
                        max(0.1, deadline - time.monotonic()),
                    )
                    await asyncio.wait_for(client.joined, max(0.1, deadline - time.monotonic()))
                except (OSError, TimeoutError, ValueError, IndexError) as error:
                    client.abort()
                    key = f"{type(error).__name__}: {error}"[:120]
                    errors[key] = errors.get(key, 0) + 1
                    if time.monotonic() >= deadline or attempt == 2:
                        return False
                    retries += 1
                    await asyncio.sleep(0.2)
                    continue
                durations.append(now_us() - begin)
                self.clients.append(client)
                return True
            return False

        async def worker() -> None:
            nonlocal next_index
            while next_index < count and time.monotonic() < deadline:
                index = next_index
                next_index += 1
                await one(first + index)

        await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
        seconds = time.monotonic() - started
        sizes: dict[str, int] = {}
        for client in self.clients:
            for group in client.groups:
                sizes[group] = sizes.get(group, 0) + 1
        return {
            "connected": len(self.clients),
            "failed": count - len(durations),
            "retries": retries,
            "errors": errors,
            "seconds": seconds,
            "connect_ms": percentiles(durations),
            "connect_us": durations.tolist(),  # raw, for merging across processes
            "group_sizes": sizes,
        }

    async def wait(
        self, phase: int, expected: int, timeout: float, idle: float, samples: bool = False
    ) -> dict[str, Any]:
        """Wait for ``expected`` deliveries of ``phase``; give up after ``timeout`` s, or ``idle`` s idle.

        ``samples``: also answer with every latency (µs), for ``merge_waits``.
        """
        started = time.monotonic()
        last_count, last_change = -1, started
        while True:
            series = self.stats.latencies.get(phase)
            count = len(series) if series is not None else 0
            now = time.monotonic()
            if count != last_count:
                last_count, last_change = count, now
            if count >= expected or now - started > timeout or now - last_change > idle:
                break
            await asyncio.sleep(0.02)
        series = self.stats.latencies.get(phase, array("q"))
        answer: dict[str, Any] = {
            "received": len(series),
            "latency_ms": percentiles(series),
            "first_us": self.stats.first.get(phase),
            "last_us": self.stats.last.get(phase),
            "lost_connections": self.lost,
        }
        if samples:
            answer["latency_us"] = series.tolist()
        return answer

    def forget(self, phase: int) -> None:
        self.stats.latencies.pop(phase, None)

    def close(self) -> dict[str, Any]:
        clients, self.clients = self.clients, []
        for client in clients:
            client.abort()
        return {"closed": len(clients)}


def percentiles(values: array[int] | list[int]) -> dict[str, float] | None:
    """p50 / p90 / p99 / max in ms of µs samples (nearest rank), or None without samples."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] / 1000, 2)

    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(ordered[-1] / 1000, 2)}


def merge_storms(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One storm result from the shares of processes that connected at the same time.

    Counts and group sizes add up, connect times are pooled before their percentiles are taken, and
    the storm lasted as long as its slowest share.
    """
    errors: dict[str, int] = {}
    sizes: dict[str, int] = {}
    durations: list[int] = []
    for part in parts:
        for key, count in part["errors"].items():
            errors[key] = errors.get(key, 0) + count
        for group, count in part["group_sizes"].items():
            sizes[group] = sizes.get(group, 0) + count
        durations += part["connect_us"]
    return {
        "connected": sum(part["connected"] for part in parts),
        "failed": sum(part["failed"] for part in parts),
        "retries": sum(part["retries"] for part in parts),
        "errors": errors,
        "seconds": max(part["seconds"] for part in parts),
        "connect_ms": percentiles(durations),
        "group_sizes": sizes,
        "processes": [{"connected": part["connected"], "seconds": part["seconds"]} for part in parts],
    }


def merge_waits(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's deliveries from every process's ``wait`` (asked with ``samples``): counts add up,
    latencies are pooled before their percentiles are taken, first/last are the earliest/latest."""
    latencies: list[int] = []
    for part in parts:
        latencies += part["latency_us"]
    firsts = [part["first_us"] for part in parts if part["first_us"] is not None]
    lasts = [part["last_us"] for part in parts if part["last_us"] is not None]
    return {
        "received": sum(part["received"] for part in parts),
        "latency_ms": percentiles(latencies),
        "first_us": min(firsts) if firsts else None,
        "last_us": max(lasts) if lasts else None,
        "lost_connections": sum(part["lost_connections"] for part in parts),
        "received_by_process": [part["received"] for part in parts],
    }


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    gen = LoadGenerator()
    out = sys.stdout.buffer

    def reply(obj: dict[str, Any]) -> None:
        out.write(orjson.dumps(obj) + b"\n")
        out.flush()

    reply({"ready": True})
    while True:
        line = await reader.readline()
        if not line:
            break
        command = orjson.loads(line)
        op = command.pop("op")
        try:
            if op == "connect":
                reply(await gen.connect(command))
            elif op == "wait":
                reply(await gen.wait(**command))
            elif op == "forget":
                gen.forget(command["phase"])
                reply({})
            elif op == "close":
                reply(gen.close())
            elif op == "quit":
                gen.close()
                reply({})
                break
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as error:  # noqa: BLE001 - reported to the orchestrator, which fails the run
            reply({"error": f"{type(error).__name__}: {error}"})


def main() -> None:
    raise_fd_limit()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve())
    else:
        uvloop.run(serve())


if __name__ == "__main__":
    main()
