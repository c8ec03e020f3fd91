"""``python -m bench.gc_pause``: what a refreeze after churn costs the clients that stay connected.

``GC_FREEZE`` keeps connections' state out of CPython's full collections; after a quarter of the
frozen connections have closed it runs one full pass (``service.gc_freeze``), which stops the event
loop for every client (~470 ms at 10,000 connections). With ``GC_FREEZE_PROBE`` (the default) that
pass runs first in a forked copy of the process (``service.gc_probe``) and the service pays only the
fork. This benchmark measures both, alternated, on the real service:

1. start the service (``python -m service``'s app, development auth, the benchmark's limits) with
   ``GC_FREEZE_PROBE`` on or off;
2. connect ``--connections`` clients from two load-generator processes: the ones that stay, and
   ``--churn`` that will leave (a quarter of the connections and a few more, so that a refreeze is due);
3. wait until their state is frozen (``realtime_gc_freezes_total{action="freeze"|"tail"}`` stop moving);
4. publish W1 (groups of 10, ``--rate`` deliveries/s) for ``--duration`` seconds; ``--close-after``
   seconds in, the leaving clients' processes (``--leave-procs``) are stopped one per
   ``--leave-interval`` (their sockets reset, as browsers leaving); the refreeze (or the fork, and
   later the probe's answer) follows at the first heartbeat round after the last of them;
5. the staying clients' latency (p50 / p99 / max), the loop lag over the phase, and what each
   ``GC_FREEZE`` action held the loop (``realtime_gc_pause_seconds``, sum / count per action).

The run stops by itself (``--timeout``), kills what it started and deletes its queues. Results: a
table on stdout, JSON with ``--output``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any, get_args

import aiohttp
import orjson
import psutil

from bench.options import Options
from bench.phases import Phases
from bench.procs import Child, LoadGenPool, kill_all
from bench.service import SERVICE_LAUNCHER, mint_tokens, service_env, service_queues, wait_service_ready
from bench.wire import group_name, raise_fd_limit
from service.gc_freeze import FreezeAction

__all__ = ["main"]

ROOT = Path(__file__).resolve().parent.parent
MODES = {"probe": "true", "in-process": "false"}  # GC_FREEZE_PROBE
_GROUP_SIZE = 10


FULL_GC = "full gc"
"""Not an action: CPython's own full collections (``realtime_gc_collection_seconds{generation="2"}``),
kept under this key in the same shape (``count``, ``pause_sum``)."""


def parse_gc_metrics(text: str) -> dict[str, dict[str, float]]:
    """``{action: {"count": freezes, "pause_sum": s, "pause_count": n}}`` from ``/metrics``, and the
    full collections under ``FULL_GC``."""
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        for prefix, key in (
            ('realtime_gc_collection_seconds_count{generation="2"}', "count"),
            ('realtime_gc_collection_seconds_sum{generation="2"}', "pause_sum"),
        ):
            if line.startswith(prefix):
                out.setdefault(FULL_GC, {})[key] = float(line.rsplit(" ", 1)[1])
        for prefix, key in (
            ("realtime_gc_freezes_total{", "count"),
            ("realtime_gc_pause_seconds_sum{", "pause_sum"),
            ("realtime_gc_pause_seconds_count{", "pause_count"),
        ):
            if line.startswith(prefix):
                labels, value = line.rsplit(" ", 1)
                action = labels.split('action="', 1)[1].split('"', 1)[0]
                out.setdefault(action, {})[key] = float(value)
    return out


async def scrape_gc(port: int) -> dict[str, dict[str, float]]:
    timeout = aiohttp.ClientTimeout(total=10.0)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as response,
    ):
        return parse_gc_metrics(await response.text())


def _count(gc: dict[str, dict[str, float]], action: str, key: str = "count") -> float:
    return gc.get(action, {}).get(key, 0.0)


async def _watch_probes(pid: int) -> dict[str, float]:
    """The forked probes of the service: how many, the longest-lived, and the most memory one held of
    its own (USS: the pages its collection copied), sampled every 50 ms until cancelled."""
    seen: dict[int, float] = {}
    uss_mb = 0.0
    parent = psutil.Process(pid)
    with contextlib.suppress(asyncio.CancelledError):
        while True:
            for child in parent.children():
                with contextlib.suppress(psutil.Error):
                    seen.setdefault(child.pid, child.create_time())
                    uss_mb = max(uss_mb, child.memory_full_info().uss / 2**20)
            await asyncio.sleep(0.05)
    return {"count": len(seen), "max_uss_mb": round(uss_mb, 1)}


class GcPause(Phases):
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        options = Options(
            servers=["service"],
            workloads=["W1"],
            connections=args.connections,
            group_size=_GROUP_SIZE,
            duration=args.duration,
            rate=args.rate,
            w2_rate=args.rate,
            burst=0,
            find_max=False,
            step_duration=args.duration,
            concurrency=args.concurrency,
            amqp=args.amqp,
            port=args.port,
            prefetch=None,
            timeout=args.timeout,
            output=workdir,
        )
        super().__init__(options, workdir)
        self.args = args

    async def run(self) -> list[dict[str, Any]]:
        key_dir = self.workdir / "keys"
        tokens = await asyncio.to_thread(mint_tokens, key_dir, [f"bench-{n}" for n in range(32)])
        results: list[dict[str, Any]] = []
        await self.broker.connect()
        try:
            for repeat in range(self.args.repeat):
                for offset, mode in enumerate(self.args.modes):
                    port = self.args.port + offset
                    self.log(f"{mode}, run {repeat + 1} of {self.args.repeat}")
                    results.append(await self.measure(mode, port, tokens, key_dir))
        finally:
            await self.broker.close()
        return results

    async def measure(self, mode: str, port: int, tokens: list[str], key_dir: Path) -> dict[str, Any]:
        args = self.args
        self.port = port
        prefix = f"bench.gc_pause.{self.run_id}.{mode}.{self.phase}"
        exchange = f"{prefix}.recommendations"
        await self.broker.declare_exchange(exchange)
        queues, exchanges = service_queues(prefix)
        exchanges.append(exchange)
        env = service_env(
            workdir=self.workdir,
            key_dir=key_dir,
            port=port,
            amqp=args.amqp,
            prefix=prefix,
            exchange=exchange,
            prefetch=None,
            log_level=args.log_level,
            extra={
                "HUB_MAX_CONNECTIONS_PER_USER": "0",
                "HUB_MAX_NEGOTIATES_PER_USER_PER_MINUTE": "0",
                "GC_FREEZE_PROBE": MODES[mode],
            },
        )
        env["PYTHONPATH"] = str(ROOT)
        stay = args.connections - args.churn
        groups = max(1, args.connections // _GROUP_SIZE)
        server: Child | None = None
        staying: LoadGenPool | None = None
        leaving: LoadGenPool | None = None
        try:
            server = await Child.start(
                f"service-{mode}",
                [self.python, "-c", SERVICE_LAUNCHER],
                env=env,
                log_dir=self.workdir,
                cwd=ROOT,
            )
            await wait_service_ready(server, port)
            staying = await LoadGenPool.start(self.python, log_dir=self.workdir, procs=1, name=f"stay-{mode}")
            leaving = await LoadGenPool.start(
                self.python, log_dir=self.workdir, procs=1, name=f"leave-{mode}"
            )
            spec: dict[str, Any] = {
                "kind": "signalr",
                "protocol": "json",
                "host": "127.0.0.1",
                "port": port,
                "path": "/hub/recommendations",
                "groups": groups,
                "tokens": tokens,
                "concurrency": args.concurrency,
                "timeout": max(60.0, args.connections / 50),
            }
            joined = await staying.connect({**spec, "n": stay}, spec["timeout"] + 30)
            sizes: dict[str, int] = joined.pop("group_sizes")
            left = await leaving.connect({**spec, "n": args.churn, "first": stay}, spec["timeout"] + 30)
            if joined["connected"] != stay or left["connected"] != args.churn:
                raise RuntimeError(
                    f"{mode}: {joined['connected']} + {left['connected']} joined of {args.connections}"
                )
            before = await self._frozen(port)
            rss_kb = server.rss_kb()
            self.log(
                f"{mode}: {args.connections} connected and frozen ({rss_kb / 1024:.0f} MB); W1 with "
                f"{args.churn} leaving {args.close_after:g} s in"
            )

            async def leave() -> None:
                """One leaving process a ``--leave-interval`` apart: the churn spread out, so that the
                refreeze's stop is not lost in the closes' own work."""
                await asyncio.sleep(args.close_after)
                assert leaving is not None
                for number, member in enumerate(leaving.members):
                    if number:
                        await asyncio.sleep(args.leave_interval)
                    await member.stop()

            watch = asyncio.create_task(_watch_probes(server.pid))
            stats, _ = await asyncio.gather(
                self._steady(
                    exchange,
                    server,
                    staying,
                    sizes,
                    lambda i: group_name(i % groups),
                    args.rate / _GROUP_SIZE,
                    args.duration,
                ),
                leave(),
            )
            after = await scrape_gc(port)
            watch.cancel()
            probes = await watch
            actions = {
                action: {
                    "count": int(_count(after, action) - _count(before, action)),
                    "pause_ms": round(
                        (_count(after, action, "pause_sum") - _count(before, action, "pause_sum")) * 1000, 1
                    ),
                }
                for action in (*get_args(FreezeAction), FULL_GC)
            }
            result = {
                "mode": mode,
                "connections": args.connections,
                "churn": args.churn,
                "rss_mb": round(rss_kb / 1024, 1),
                "latency_ms": stats["latency_ms"],
                "lost": stats["lost"],
                "loop_lag": stats["loop_lag"],
                "server_cpu_s": stats["server_cpu_s"],
                "actions": actions,
                "probe_processes": probes,
            }
            latency = stats["latency_ms"] or {}
            self.log(
                f"{mode}: p99 {latency.get('p99')} max {latency.get('max')} ms, lost {stats['lost']}, "
                f"actions {actions}"
            )
            return result
        finally:
            for pool in (staying, leaving):
                if pool is not None:
                    with contextlib.suppress(Exception):
                        await pool.stop()
            try:
                if server is not None:
                    await server.stop()
            finally:  # a stream is durable and would fill for ever
                await self.broker.cleanup(queues=queues, exchanges=exchanges)

    async def _frozen(self, port: int) -> dict[str, dict[str, float]]:
        """Until the freezes (the storm's and its tail's) stop moving for two heartbeat rounds (at least
        one happened)."""
        last: dict[str, dict[str, float]] = {}
        steady = 0
        for _ in range(120):
            await asyncio.sleep(1.0)
            now = await scrape_gc(port)
            frozen = _count(now, "freeze") + _count(now, "tail")
            if _count(now, "freeze") and frozen == _count(last, "freeze") + _count(last, "tail"):
                steady += 1
                if steady >= 2:
                    return now
            else:
                steady = 0
            last = now
        raise RuntimeError("the service never froze its connections (GC_FREEZE off?)")


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        "| mode | connections (leaving) | RSS MB | p50 / p99 / max ms | lost | loop lag p99 / max ms "
        "| refreeze: count, pause ms | fork: count, pause ms | probe: count | probe's own memory MB "
        "| full passes of CPython's own: count, ms | survivors: count |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lat = r["latency_ms"] or {}
        lag = r["loop_lag"] or {}
        act = r["actions"]
        lines.append(
            f"| {r['mode']} | {r['connections']:,} ({r['churn']:,}) | {r['rss_mb']:.0f} "
            f"| {lat.get('p50')} / {lat.get('p99')} / {lat.get('max')} | {r['lost']} "
            f"| {lag.get('p99_ms')} / ≤{lag.get('max_ms')} "
            f"| {_cell(act, 'refreeze')} | {_cell(act, 'fork')} | {act['probe']['count']} "
            f"| {r.get('probe_processes', {}).get('max_uss_mb', '–')} "
            f"| {_cell(act, FULL_GC)} | {act.get('survivors', {}).get('count', '–')} |"
        )
    return "\n".join(lines) + "\n"


def _cell(actions: dict[str, dict[str, Any]], key: str) -> str:
    found = actions.get(key)
    return "–" if found is None else f"{found['count']}, {found['pause_ms']}"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gc_pause", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument(
        "--churn", type=int, default=0, help="clients that leave (default: a quarter, at least 1,000, + 100)"
    )
    parser.add_argument("--rate", type=float, default=5000.0, help="W1 deliveries/s (default 5000: 500 ev/s)")
    parser.add_argument("--duration", type=float, default=12.0, help="seconds of W1 (default 12)")
    parser.add_argument("--close-after", type=float, default=2.0, help="seconds into W1 the leavers go")
    parser.add_argument("--leave-procs", type=int, default=5, help="processes the leavers are split over")
    parser.add_argument("--leave-interval", type=float, default=1.0, help="seconds between two leaving procs")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated of probe, in-process")
    parser.add_argument("--repeat", type=int, default=2, help="alternations of the modes (default 2)")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument(
        "--amqp", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument("--port", type=int, default=5190)
    parser.add_argument("--timeout", type=float, default=900.0, help="hard limit for the whole run, s")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument("--keep-logs", action="store_true")
    parser.add_argument("--log-level", default="WARNING", help="the service's (INFO: its gc.frozen lines)")
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in args.modes:
        if mode not in MODES:
            parser.error(f"unknown mode {mode!r}")
    if not args.churn:
        args.churn = max(1000, args.connections // 4) + 100  # a refreeze waits for both (service.gc_freeze)
    return args


async def _main(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    return await asyncio.wait_for(GcPause(args, workdir).run(), args.timeout)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    raise_fd_limit()
    workdir = Path(tempfile.mkdtemp(prefix="bench-gc-pause-"))
    ok = False
    try:
        import uvloop

        results = uvloop.run(_main(args, workdir))
        ok = True
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("[gc_pause] interrupted; stopped every process it started", file=sys.stderr)
        return 130
    except TimeoutError:
        print(f"[gc_pause] timed out after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    finally:
        kill_all()
        if ok and not args.keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"[gc_pause] logs kept in {workdir}", file=sys.stderr)
    if args.output is not None:
        args.output.write_bytes(
            orjson.dumps({"command": sys.argv, "results": results}, option=orjson.OPT_INDENT_2) + b"\n"
        )
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
