"""``python -m bench.memory``: what one idle WebSocket costs the service's process, and the floor's.

For each server (``--servers``: ``service``, ``raw``), in its own process, one after the other:

1. start it — the service is the real app and hub (``create_app`` without the event consumer: an idle
   socket never sees the consumer, and the probe needs no stream), served by ``service.serving`` as
   ``python -m service`` does, with development auth and the benchmark's limits; the floor is
   ``bench/servers/raw.py`` with its RabbitMQ feed (its queue and exchange are deleted afterwards);
2. connect ``--connections`` idle clients with the benchmark's load generator (``bench.loadgen``):
   SignalR JSON over WebSockets after a negotiate on a connection of its own, each joined to its
   group ``g{i % (n/10)}`` and to ``all``, exactly as ``python -m bench``'s W3;
3. RSS before and after (psutil, from outside, no tracing): KB per connection.

With ``--trace`` every server runs a second time with ``tracemalloc`` on: a snapshot (after a full
collection) before the clients and one after; the difference per connection, in total and by
allocation site (file:line), biggest first. Traced bytes are what Python allocated; RSS adds the
allocator's overhead and the kernel's socket buffers are not in either.

The run stops by itself (``--timeout``) and kills what it started. Results: a table on stdout, and
``--output`` for JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import linecache
import os
import shutil
import signal
import sys
import tempfile
import time
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import orjson

from bench.broker import Broker
from bench.procs import LoadGenProcess, kill_all
from bench.service import mint_tokens, service_env, wait_http_ok, wait_service_ready
from bench.wire import raise_fd_limit

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
SERVERS = ("service", "raw")
_GROUP_SIZE = 10  # as the benchmark's default: W1 groups of ten


# --- the server side (``python -m bench.memory serve ...``, one child per measurement) ------------


class _Probe:
    """Answers the orchestrator's commands on stdin, one JSON line each, from inside the server."""

    def __init__(self, trace: bool, frames: int) -> None:
        self.trace = trace
        self.frames = frames
        self.before: tracemalloc.Snapshot | None = None
        self.traced_before = 0

    def _snapshot(self) -> tracemalloc.Snapshot:
        gc.collect()
        snapshot = tracemalloc.take_snapshot()
        return snapshot.filter_traces(
            (
                tracemalloc.Filter(False, tracemalloc.__file__),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
                tracemalloc.Filter(False, "<frozen importlib._bootstrap_external>"),
            )
        )

    def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command.get("op")
        if op == "snapshot":
            if not self.trace:
                return {}
            self.before = self._snapshot()
            self.traced_before = tracemalloc.get_traced_memory()[0]
            return {"traced": self.traced_before}
        if op == "diff":
            if not self.trace or self.before is None:
                return {"error": "no snapshot to compare with (start with --trace, send snapshot first)"}
            after = self._snapshot()
            traced = tracemalloc.get_traced_memory()[0]
            # One frame per allocation: by line. More (``--frames``): by call path, each shown as
            # its innermost line and the innermost line of ours (service/, bench/) that led there.
            stats = after.compare_to(self.before, "lineno" if self.frames == 1 else "traceback")
            top = int(command.get("top", 20))
            sites = []
            for stat in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:top]:
                frames = list(stat.traceback)  # innermost last
                frame = frames[-1]
                site: dict[str, Any] = {
                    "site": f"{_short(frame.filename)}:{frame.lineno}",
                    "code": linecache.getline(frame.filename, frame.lineno).strip()[:90],
                    "bytes": stat.size_diff,
                    "blocks": stat.count_diff,
                }
                ours = [f for f in frames[:-1] if _short(f.filename).startswith(("service/", "bench/"))]
                if ours:
                    site["via"] = f"{_short(ours[-1].filename)}:{ours[-1].lineno}"
                sites.append(site)
            return {
                "traced_diff": traced - self.traced_before,
                "sites_diff": sum(stat.size_diff for stat in stats),
                "sites": sites,
            }
        return {"error": f"unknown op {op!r}"}


def _short(filename: str) -> str:
    """A file name without the interpreter's or the checkout's prefix."""
    for marker in ("site-packages/", "lib/python3"):
        if marker in filename:
            return filename.split(marker, 1)[1]
    with contextlib.suppress(ValueError):
        return str(Path(filename).relative_to(ROOT))
    return filename


async def _control(probe: _Probe) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer

    def reply(answer: dict[str, Any]) -> None:
        out.write(orjson.dumps(answer) + b"\n")
        out.flush()

    reply({"ready": True})
    while line := await reader.readline():
        command = orjson.loads(line)
        if command.get("op") == "quit":
            reply({})
            os.kill(os.getpid(), signal.SIGTERM)  # the server's own shutdown path
            return
        reply(probe.handle(command))


async def _serve_service(probe: _Probe) -> None:
    from config.settings import load_settings
    from service.app import create_app
    from service.serving import serve

    settings = load_settings()
    control = asyncio.create_task(_control(probe))
    try:
        await serve(settings, create_app(settings, consumer_factory=False))
    finally:
        control.cancel()


async def _serve_raw(probe: _Probe, args: argparse.Namespace) -> None:
    from aiohttp import web

    from bench.servers.raw import build_app

    runner = web.AppRunner(build_app(args), access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    control = asyncio.create_task(_control(probe))
    try:
        await web.TCPSite(runner, args.host, args.port).start()
        await stop.wait()
    finally:
        control.cancel()
        await runner.cleanup()


def _serve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.memory serve")
    parser.add_argument("--server", choices=SERVERS, required=True)
    parser.add_argument("--trace", action="store_true")
    parser.add_argument("--frames", type=int, default=1)
    args, rest = parser.parse_known_args(argv)
    # The rest is the server's own: the raw floor's are bench.servers.feed's flags (its build_app reads
    # them all); the service is configured by its environment and only listens on --port.
    server_parser = argparse.ArgumentParser(prog=f"python -m bench.memory serve --server {args.server}")
    if args.server == "raw":
        from bench.servers.feed import add_feed_arguments

        add_feed_arguments(server_parser)
    else:
        server_parser.add_argument("--port", type=int, required=True)
    server_parser.parse_args(rest, namespace=args)
    if args.trace:
        tracemalloc.start(args.frames)
    raise_fd_limit()
    probe = _Probe(args.trace, args.frames)
    import uvloop

    if args.server == "service":
        from config.settings import load_settings
        from service.logs import configure_logging

        settings = load_settings()
        configure_logging(settings.log_level, settings.log_format)  # as ``python -m service`` does
        uvloop.run(_serve_service(probe))
    else:
        uvloop.run(_serve_raw(probe, args))
    return 0


# --- the orchestrator -------------------------------------------------------------------------------


def _log(message: str) -> None:
    print(f"[memory {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Probe:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.broker = Broker(args.amqp)
        self.key_dir = workdir / "keys"
        self.tokens: list[str] = []

    async def run(self) -> dict[str, Any]:
        self.tokens = await asyncio.to_thread(mint_tokens, self.key_dir, [f"bench-{n}" for n in range(32)])
        results: dict[str, Any] = {}
        await self.broker.connect()
        try:
            for offset, name in enumerate(self.args.servers):
                port = self.args.port + offset
                result = results[name] = await self.measure(name, port, trace=False)
                if self.args.trace:
                    traced = await self.measure(name, port, trace=True)
                    result["traced"] = traced["traced"]
                    result["rss_kb_per_connection_traced"] = traced["rss_kb_per_connection"]
        finally:
            await self.broker.close()
        return results

    async def measure(self, name: str, port: int, *, trace: bool) -> dict[str, Any]:
        args = self.args
        prefix = f"bench.memory.{self.run_id}.{name}{'.traced' if trace else ''}"
        argv = [sys.executable, "-m", "bench.memory", "serve", "--server", name, "--port", str(port)]
        if trace:
            argv += ["--trace", "--frames", str(args.frames)]
        env = dict(os.environ)
        queues: list[str] = []
        exchanges: list[str] = []
        if name == "service":
            env = service_env(
                workdir=self.workdir,
                key_dir=self.key_dir,
                port=port,
                amqp=args.amqp,
                prefix=prefix,
                exchange=f"{prefix}.recommendations",
                prefetch=100,
                # 32 tokens for all clients, as in the benchmark: no per-user limits.
                extra={
                    "HUB_MAX_CONNECTIONS_PER_USER": "0",
                    "HUB_MAX_NEGOTIATES_PER_USER_PER_MINUTE": "0",
                    **args.service_env,
                },
            )
            ready = f"http://127.0.0.1:{port}/readyz"
        else:
            exchange, queue = f"{prefix}.recommendations", f"{prefix}.queue"
            exchanges.append(exchange)
            queues.append(queue)
            await self.broker.declare_exchange(exchange)
            argv += ["--amqp", args.amqp, "--exchange", exchange, "--queue", queue]
            ready = f"http://127.0.0.1:{port}/metrics"
        env["PYTHONPATH"] = str(ROOT)
        label = f"{name}{' (traced)' if trace else ''}"
        server: LoadGenProcess | None = None
        loadgen: LoadGenProcess | None = None
        try:
            server = await LoadGenProcess.start(
                sys.executable,
                log_dir=self.workdir,
                name=f"{name}{'-traced' if trace else ''}",
                module="bench.memory",
                args=tuple(argv[3:]),
                env=env,
                cwd=ROOT,
            )
            if name == "service":
                await wait_service_ready(server.child, port)
            else:
                await wait_http_ok(server.child, ready)
            loadgen = await LoadGenProcess.start(sys.executable, log_dir=self.workdir, name=f"loadgen-{name}")
            await asyncio.sleep(1.0)
            await server.call("snapshot", 120.0)
            rss_before = server.child.rss_kb()
            spec = {
                "kind": "signalr" if name == "service" else "raw",
                "protocol": "json",
                "host": "127.0.0.1",
                "port": port,
                "path": "/hub/recommendations",
                "n": args.connections,
                "groups": max(1, args.connections // _GROUP_SIZE),
                "tokens": self.tokens if name == "service" else [],
                "concurrency": args.concurrency,
                "timeout": max(60.0, args.connections / 50),
            }
            _log(f"{label}: {args.connections} clients")
            storm = await loadgen.call("connect", float(spec["timeout"]) + 30, **spec)
            connected = int(storm["connected"])
            if connected != args.connections:
                raise RuntimeError(f"{label}: {connected} of {args.connections} joined: {storm['errors']}")
            await asyncio.sleep(args.settle)
            rss_after = server.child.rss_kb()
            result: dict[str, Any] = {
                "connections": connected,
                "rss_before_kb": round(rss_before, 1),
                "rss_after_kb": round(rss_after, 1),
                "rss_kb_per_connection": round((rss_after - rss_before) / connected, 2),
            }
            if trace:
                diff = await server.call("diff", 300.0, top=args.top)
                result["traced"] = {
                    "bytes_per_connection": round(diff["traced_diff"] / connected, 1),
                    "sites": [
                        {**site, "bytes_per_connection": round(site["bytes"] / connected, 1)}
                        for site in diff["sites"]
                    ],
                }
            _log(f"{label}: {result['rss_kb_per_connection']} KB/connection RSS")
            return result
        finally:
            if loadgen is not None:
                await loadgen.stop()
            if server is not None:
                await server.stop()
            await self.broker.cleanup(queues=queues, exchanges=exchanges)


def render(results: dict[str, Any], connections: int) -> str:
    lines = [
        f"# RSS per idle WebSocket ({connections} clients, 2 groups each)",
        "",
        "| server | RSS KB/conn | traced B/conn |",
        "|---|---|---|",
    ]
    for name, result in results.items():
        traced = result.get("traced")
        per = f"{traced['bytes_per_connection']:,.0f}" if traced else "-"
        lines.append(f"| {name} | {result['rss_kb_per_connection']:.2f} | {per} |")
    for name, result in results.items():
        traced = result.get("traced")
        if not traced:
            continue
        lines += ["", f"## {name}: top allocation sites (traced bytes per connection)", ""]
        lines += ["| B/conn | blocks/conn | site | code |", "|---|---|---|---|"]
        for site in traced["sites"]:
            via = f" (via {site['via']})" if "via" in site else ""
            lines.append(
                f"| {site['bytes_per_connection']:,.0f} | {site['blocks'] / connections:.2f} "
                f"| {site['site']}{via} | `{site['code']}` |"
            )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=2000, help="idle clients (default 2000)")
    parser.add_argument("--servers", default=",".join(SERVERS), help="comma-separated of service, raw")
    parser.add_argument("--trace", action="store_true", help="also a tracemalloc run: top allocation sites")
    parser.add_argument("--top", type=int, default=25, help="allocation sites listed with --trace")
    parser.add_argument("--frames", type=int, default=1, help="tracemalloc frames kept per allocation")
    parser.add_argument("--concurrency", type=int, default=100, help="clients connecting at once")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between the storm and RSS")
    parser.add_argument(
        "--amqp", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument("--port", type=int, default=5180, help="first server port (each server its own)")
    parser.add_argument("--timeout", type=float, default=600.0, help="hard limit for the whole run, s")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the servers' logs (a temp dir)")
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE", help="extra env for the service"
    )
    args = parser.parse_args(argv)
    args.service_env = dict(item.split("=", 1) for item in args.service_env)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    for name in args.servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    return args


async def _main(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await asyncio.wait_for(Probe(args, workdir).run(), args.timeout)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        return _serve(argv[1:])
    args = parse_args(argv)
    from config.settings import LogFormat
    from service.logs import configure_logging

    configure_logging("WARNING", LogFormat.CONSOLE)  # library log lines on stderr, only when they matter
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    ok = False
    try:
        import uvloop

        results = uvloop.run(_main(args, workdir))
        ok = True
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("[memory] interrupted; stopped every process it started", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"[memory] timed out after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    finally:
        kill_all()
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"[memory] logs kept in {workdir}", file=sys.stderr)
    if args.output is not None:
        payload = {"connections": args.connections, "servers": results}
        args.output.write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2) + b"\n")
    print(render(results, args.connections))
    return 0


if __name__ == "__main__":
    sys.exit(main())
