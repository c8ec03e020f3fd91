"""``python -m bench``: the fan-out benchmark, one server process at a time, against one load generator.

For every server (``--servers``) the run goes:

1. declare a fresh exchange, start the server in its own process, wait until its queue has a consumer,
   check its open-file limit holds ``--connections``; start the load generator: ``--loadgen-procs``
   processes (default one per 9,500 clients), each owning a contiguous share of the clients, their
   results merged from raw samples (``bench.procs.LoadGenPool``);
2. RSS before; **W3** — the connection storm: ``--connections`` clients negotiate (where the protocol
   has it), connect and join their W1 group ``g{i % groups}`` and the broadcast group ``all``; RSS after;
3. for each of **W1** (groups of ``--group-size``) and **W2** (one group of everyone):
   *steady* — ``--rate`` deliveries/s (W2: ``--w2-rate`` if given) for ``--duration`` s: loss,
   latency, the server's loop lag, CPU per 1,000 deliveries, the broker's CPU (a local node's);
   *burst* — ``--burst`` deliveries' worth of events published as fast as confirms allow: the
   deliveries/s the server sustains when saturated (``--burst 0``: none);
   with ``--find-max``, steps of ``--step-duration`` s with the rate ×1.5 until a delivery is missing
   or p99 ≥ 100 ms, then one run at half the highest passing rate (its p99 is the latency target);
4. close the clients, stop the server, delete its queues and exchanges.

Results: ``bench/results/latest.json`` and ``latest.md`` (or ``--output``), each figure also as a ratio
to the raw floor. Every run is bounded (``--timeout``) and kills what it started.

``--scaling 1000,5000,10000,19000``: the above (without bursts unless ``--burst``) once per number of
connections, each server afresh at each step, into one table (``bench.scaling``): results
``scaling.json`` / ``scaling.md``, rewritten after every step.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import psutil

from bench.broker import Broker, PublishResult
from bench.lag import lag_between, scrape_lag
from bench.machine import machine_facts
from bench.options import LABELS, Options, parse_args
from bench.procs import BrokerCpu, Child, LoadGenPool, kill_all, loadgen_procs_for
from bench.report import render_markdown, summarize
from bench.scaling import render_scaling_markdown, scaling_table
from bench.service import SERVICE_LAUNCHER, mint_tokens, service_env, service_queues, wait_server_ready
from bench.wire import BROADCAST_GROUP, group_name, now_us, raise_fd_limit

ROOT = Path(__file__).resolve().parent.parent
P99_LIMIT_MS = 100.0
FD_MARGIN = 200  # a server's files beyond its clients: broker link, listener, /metrics, logs, libraries


class Run:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.broker = Broker(options.amqp)
        self.broker_cpu = BrokerCpu.find(options.amqp)  # figures None when not a local process
        self.python = sys.executable
        self.phase = 0
        self.port = 0  # the server being measured (its /metrics has the loop-lag histogram)
        self.argv: list[str] = []

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    def next_phase(self) -> int:
        self.phase += 1
        return self.phase

    # --- one server ---------------------------------------------------------------------------

    async def measure(self, name: str, port: int, tokens: list[str], key_dir: Path) -> dict[str, Any]:
        options = self.options
        self.port = port
        prefix = f"bench.{self.run_id}.{name}"
        exchange = f"{prefix}.recommendations"
        queue = f"{prefix}.queue"
        cleanup_queues = [queue]
        cleanup_exchanges = [exchange]
        await self.broker.declare_exchange(exchange)
        if name.startswith("service"):
            env = service_env(
                workdir=self.workdir,
                key_dir=key_dir,
                port=port,
                amqp=options.amqp,
                prefix=prefix,
                exchange=exchange,
                prefetch=options.prefetch,
                # 10,000 clients share 32 tokens: the per-user limits would refuse most of them.
                extra={
                    "HUB_MAX_CONNECTIONS_PER_USER": "0",
                    "HUB_MAX_NEGOTIATES_PER_USER_PER_MINUTE": "0",
                    **options.service_env,
                },
            )
            queues, exchanges = service_queues(prefix)
            cleanup_queues += queues
            cleanup_exchanges += exchanges
            argv = [self.python, "-c", SERVICE_LAUNCHER]
        else:
            env = dict(os.environ)
            module = "bench.servers.socketio_server" if name == "socketio" else "bench.servers.raw"
            argv = [self.python, "-m", module, "--port", str(port), "--amqp", options.amqp, "--queue", queue]
            argv += ["--exchange", exchange] + (["--stream"] if name == "raw-stream" else [])
            if options.prefetch is not None:
                argv += ["--prefetch", str(options.prefetch)]
        env["PYTHONPATH"] = str(ROOT)
        server: Child | None = None
        loadgen: LoadGenPool | None = None
        result: dict[str, Any] = {"name": name, "label": LABELS[name], "queues": cleanup_queues}
        try:
            server = await Child.start(name, argv, env=env, log_dir=self.workdir, cwd=ROOT)
            await wait_server_ready(server, port, service=name.startswith("service"))
            result["server_fd_limit"] = self._check_fd_limit(server)
            loadgen = await LoadGenPool.start(
                self.python, log_dir=self.workdir, procs=options.procs, name=f"loadgen-{name}"
            )
            result["loadgen_procs"] = len(loadgen.members)
            await asyncio.sleep(1.0)
            result["rss_before_kb"] = server.rss_kb()
            kind = "signalr" if name.startswith("service") else name.removesuffix("-stream")
            spec: dict[str, Any] = {
                "kind": kind,
                "protocol": "messagepack" if name == "service-msgpack" else "json",
                "host": "127.0.0.1",
                "port": port,
                "path": "/hub/recommendations",
                "n": options.connections,
                "groups": options.groups,
                "tokens": tokens if kind == "signalr" else [],
                "concurrency": options.concurrency,
                "timeout": max(60.0, options.connections / 50),
            }
            self.log(
                f"{name}: W3 storm, {options.connections} clients from {len(loadgen.members)} "
                f"load-generator process(es)"
            )
            cpu0 = server.cpu_seconds()
            profiler = await self._start_profiler(server, f"{name}-W3-storm")
            try:
                storm = await loadgen.connect(spec, spec["timeout"] + 30)
            finally:
                if profiler is not None:
                    await profiler.interrupt(30.0)
            storm["server_cpu_s"] = server.cpu_seconds() - cpu0
            storm["connects_per_s"] = storm["connected"] / storm["seconds"] if storm["seconds"] else 0.0
            sizes: dict[str, int] = storm.pop("group_sizes")
            if not storm["connected"]:
                raise RuntimeError(f"{name}: no client could connect: {storm['errors']}")
            result["storm"] = storm
            self.log(
                f"{name}: {storm['connected']} joined in {storm['seconds']:.1f} s "
                f"({storm['connects_per_s']:.0f}/s, {storm['failed']} failed)"
            )
            await asyncio.sleep(2.0)
            result["rss_after_kb"] = server.rss_kb()
            connected = max(1, storm["connected"])
            result["kb_per_connection"] = (result["rss_after_kb"] - result["rss_before_kb"]) / connected
            workloads: dict[str, Any] = {}
            for workload in ("W1", "W2"):
                if workload in options.workloads:
                    workloads[workload] = await self._workload(
                        workload, name, exchange, server, loadgen, sizes
                    )
            result["workloads"] = workloads
            result["rss_end_kb"] = server.rss_kb()
            result["server_alive"] = server.alive()
        finally:
            try:
                if loadgen is not None:
                    await loadgen.stop()
                if server is not None:
                    await server.stop()
            finally:  # whatever failed: a stream is durable and would fill for ever
                await self.broker.cleanup(queues=cleanup_queues, exchanges=cleanup_exchanges)
        return result

    def _check_fd_limit(self, server: Child) -> int:
        """The server's open-file limit must hold every client, the storm's negotiate requests in
        flight and its own broker link, listener and files (the launchers raise it to the hard limit)."""
        soft, _hard = server.ps.rlimit(psutil.RLIMIT_NOFILE)
        needed = self.options.connections + self.options.concurrency + FD_MARGIN
        if 0 <= soft < needed:
            raise RuntimeError(
                f"{server.name}: open-file limit {soft} < {needed} "
                f"({self.options.connections} clients + {self.options.concurrency} in flight + {FD_MARGIN}); "
                "raise the hard limit (ulimit -Hn)"
            )
        return int(soft)

    # --- one workload -------------------------------------------------------------------------

    async def _workload(
        self,
        workload: str,
        name: str,
        exchange: str,
        server: Child,
        loadgen: LoadGenPool,
        sizes: dict[str, int],
    ) -> dict[str, Any]:
        options = self.options
        rate = options.rate if workload == "W1" else options.w2_rate
        if workload == "W1":
            groups = options.groups

            def region_of(index: int) -> str:
                return group_name(index % groups)

            fanout = options.group_size
        else:

            def region_of(index: int) -> str:
                return BROADCAST_GROUP

            fanout = options.connections
        out: dict[str, Any] = {"fanout": fanout, "rate": rate}
        self.log(f"{name}: {workload} steady {rate:.0f} deliveries/s for {options.duration:.0f} s")
        profiler = await self._start_profiler(server, f"{name}-{workload}-steady")
        try:
            out["steady"] = await self._steady(
                exchange, server, loadgen, sizes, region_of, rate / fanout, options.duration
            )
        finally:
            if profiler is not None:
                await profiler.interrupt(30.0)
        self._log_phase(name, workload, "steady", out["steady"])
        out["burst"] = None  # --burst 0: no saturation burst
        if options.burst > 0:
            events = max(1, options.burst // fanout)
            self.log(f"{name}: {workload} burst of {events} events ({events * fanout} deliveries)")
            profiler = await self._start_profiler(server, f"{name}-{workload}-burst")
            try:
                out["burst"] = await self._burst(exchange, server, loadgen, sizes, region_of, events)
            finally:
                if profiler is not None:
                    await profiler.interrupt(30.0)
            self._log_phase(name, workload, "burst", out["burst"])
        if options.find_max:
            out["find_max"] = await self._find_max(
                name, workload, exchange, server, loadgen, sizes, region_of, fanout, rate
            )
        return out

    async def _start_profiler(self, server: Child, label: str) -> Child | None:
        if not self.options.profile:
            return None
        py_spy = Path(self.python).with_name("py-spy")
        out = self.workdir / f"{label}.collapsed"
        argv = [str(py_spy), "record", "--pid", str(server.pid), "--nonblocking", "--rate", "250"]
        argv += ["--format", "raw", "-o", str(out)]
        child = await Child.start(f"py-spy-{label}", argv, log_dir=self.workdir)
        await asyncio.sleep(1.0)
        self.log(f"profiling {server.name} into {out}")
        return child

    def _log_phase(self, name: str, workload: str, phase: str, stats: dict[str, Any]) -> None:
        latency = stats.get("latency_ms") or {}
        lag = stats.get("loop_lag") or {}
        self.log(
            f"{name}: {workload} {phase}: {stats['received']}/{stats['expected']} delivered, "
            f"{stats['deliveries_per_s']:.0f}/s, p99 {latency.get('p99')} max {latency.get('max')} ms, "
            f"loop lag p99 {lag.get('p99_ms')} / max {lag.get('max_ms')} ms, "
            f"cpu {stats['cpu_s_per_1k']} s/1k, server cpu {stats['server_cpu_util']:.0%}, "
            f"broker cpu {stats['broker_cpu_pct']} %"
        )

    async def _collect(
        self,
        phase: int,
        published: PublishResult,
        sizes: dict[str, int],
        server: Child,
        loadgen: LoadGenPool,
        cpu0: float,
        gen_cpu0: float,
        wall0: float,
        broker0: float | None,
        timeout: float,
    ) -> dict[str, Any]:
        expected = sum(count * sizes.get(region, 0) for region, count in published.by_region.items())
        stats = await loadgen.wait(phase, published.by_region, timeout, 10.0, timeout + 30)
        await loadgen.forget(phase)
        cpu = server.cpu_seconds() - cpu0
        wall = time.monotonic() - wall0
        received = stats["received"]
        first, last = published.first_us, stats.get("last_us") or published.first_us
        span = max(1e-6, (last - first) / 1e6)
        return {
            "events": published.count,
            "expected": expected,
            "received": received,
            "lost": max(0, expected - received),
            "duplicates": max(0, received - expected),
            "publish_s": round(published.seconds, 3),
            "deliveries_per_s": received / span,
            "latency_ms": stats["latency_ms"],
            "server_cpu_s": round(cpu, 3),
            "server_cpu_util": cpu / wall if wall else 0.0,
            "loadgen_cpu_util": (loadgen.cpu_seconds() - gen_cpu0) / wall if wall else 0.0,
            "broker_cpu_pct": self.broker_cpu.percent(broker0, wall),
            "cpu_s_per_1k": round(cpu / received * 1000, 5) if received else None,
            "lost_connections": stats["lost_connections"],
            "received_by_process": stats["received_by_process"],
        }

    async def _steady(
        self,
        exchange: str,
        server: Child,
        loadgen: LoadGenPool,
        sizes: dict[str, int],
        region_of: Any,
        events_per_s: float,
        duration: float,
    ) -> dict[str, Any]:
        phase = self.next_phase()
        lag0 = await scrape_lag(self.port)
        cpu0, gen0, wall0 = server.cpu_seconds(), loadgen.cpu_seconds(), time.monotonic()
        broker0 = self.broker_cpu.seconds()
        published = await self.broker.publish_rate(
            exchange, phase, rate=events_per_s, duration=duration, region_of=region_of
        )
        stats = await self._collect(
            phase, published, sizes, server, loadgen, cpu0, gen0, wall0, broker0, duration + 60
        )
        stats["loop_lag"] = lag_between(lag0, await scrape_lag(self.port))
        return stats

    async def _burst(
        self,
        exchange: str,
        server: Child,
        loadgen: LoadGenPool,
        sizes: dict[str, int],
        region_of: Any,
        events: int,
    ) -> dict[str, Any]:
        """Saturation: publish ``events`` while the server is stopped (SIGSTOP), then let it drain them.

        Publishing and RabbitMQ share the machine's two cores with the server; with the backlog queued
        first, the drain measures the server (and the load generator), not the publisher.
        """
        phase = self.next_phase()
        server.pause()
        try:
            published = await self.broker.publish_burst(exchange, phase, count=events, region_of=region_of)
            await asyncio.sleep(0.2)
        finally:
            cpu0, gen0, wall0 = server.cpu_seconds(), loadgen.cpu_seconds(), time.monotonic()
            broker0 = self.broker_cpu.seconds()
            resumed = now_us()
            server.resume()
        published.first_us = resumed  # deliveries/s counts from the moment the server can run
        # No loop lag here: the pause itself is one long "lag" (the sampler wakes late by the time
        # stopped), which says nothing about the server.
        return await self._collect(
            phase, published, sizes, server, loadgen, cpu0, gen0, wall0, broker0, 180.0
        )

    async def _find_max(
        self,
        name: str,
        workload: str,
        exchange: str,
        server: Child,
        loadgen: LoadGenPool,
        sizes: dict[str, int],
        region_of: Any,
        fanout: int,
        start_rate: float,
    ) -> dict[str, Any]:
        options = self.options
        rate = max(start_rate / 2, float(fanout))  # deliveries/s; at least one event per second
        steps: list[dict[str, Any]] = []
        best: float | None = None
        lowest_fail: float | None = None
        while len(steps) < 14:
            stats = await self._steady(
                exchange, server, loadgen, sizes, region_of, rate / fanout, options.step_duration
            )
            latency = stats["latency_ms"] or {}
            p99 = latency.get("p99")
            passed = stats["lost"] == 0 and p99 is not None and p99 < P99_LIMIT_MS
            lag = stats.get("loop_lag") or {}
            steps.append(
                {
                    "rate": rate,
                    "passed": passed,
                    "p50_ms": latency.get("p50"),
                    "p99_ms": p99,
                    "max_ms": latency.get("max"),
                    "lost": stats["lost"],
                    "cpu_s_per_1k": stats["cpu_s_per_1k"],
                    "broker_cpu_pct": stats["broker_cpu_pct"],
                    "loop_lag": stats.get("loop_lag"),
                }
            )
            self.log(
                f"{name}: {workload} find-max {rate:.0f}/s: p99 {p99} ms, loop lag p99 "
                f"{lag.get('p99_ms')} / max {lag.get('max_ms')} ms, lost {stats['lost']} -> {passed}"
            )
            await asyncio.sleep(1.0)
            if passed:
                best = rate
                rate *= 1.5  # up until a step fails
                if lowest_fail is not None and rate >= lowest_fail:
                    break
            else:
                lowest_fail = rate
                if best is not None:
                    break
                rate /= 2  # the first step already failed: down until one passes
                if rate / fanout * options.step_duration < 1:
                    break  # less than one event per step: nothing left to measure
        out: dict[str, Any] = {"max_rate": best, "steps": steps}
        if best is not None:
            await asyncio.sleep(2.0)
            half = await self._steady(
                exchange, server, loadgen, sizes, region_of, best / 2 / fanout, options.duration
            )
            out["half_max"] = half
            self.log(
                f"{name}: {workload} at half max ({best / 2:.0f}/s): "
                f"p99 {(half['latency_ms'] or {}).get('p99')} ms"
            )
        return out

    # --- the whole run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        options = self.options
        (self.workdir / "empty.env").write_text("")
        key_dir = self.workdir / "keys"
        tokens = await asyncio.to_thread(mint_tokens, key_dir, [f"bench-{n}" for n in range(32)])
        await self.broker.connect()
        results: dict[str, Any] = {}
        started = time.monotonic()
        try:
            for offset, name in enumerate(options.servers):
                self.log(f"=== {LABELS[name]} ===")
                results[name] = await self.measure(name, options.port + offset, tokens, key_dir)
        finally:
            await self.broker.close()
        return {
            "command": "python -m bench " + " ".join(shlex.quote(a) for a in self.argv),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine_facts(self.broker.server_version),
            "options": {
                "servers": options.servers,
                "workloads": options.workloads,
                "connections": options.connections,
                "group_size": options.group_size,
                "groups": options.groups,
                "duration_s": options.duration,
                "rate_deliveries_per_s": options.rate,
                "w2_rate_deliveries_per_s": options.w2_rate,
                "loadgen_procs": options.procs,
                "burst_deliveries": options.burst,
                "find_max": options.find_max,
                "prefetch": options.prefetch,
                "service_env": options.service_env,
                "quick": options.quick,
            },
            "runtime_s": round(time.monotonic() - started, 1),
            "logs": str(self.workdir),
            "servers": results,
        }


async def _scaling(options: Options, argv: list[str], workdir: Path) -> dict[str, Any]:
    """Every ``--scaling`` step as its own run (every server afresh), the table after each step."""
    procs = options.loadgen_procs or loadgen_procs_for(max(options.scaling))
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for connections in options.scaling:
        step_dir = workdir / f"step-{connections}"
        step_dir.mkdir()
        run = Run(replace(options, connections=connections, loadgen_procs=procs), step_dir)
        run.argv = argv
        run.log(f"##### scaling step: {connections:,} connections ({procs} load-generator processes)")
        step = await run.run()
        step["summary"] = summarize(step)
        steps.append({"connections": connections, "runtime_s": step["runtime_s"], "servers": step["servers"]})
        table = scaling_table(steps)
        result = {
            "command": step["command"],
            "date": step["date"],
            "machine": step["machine"],
            "options": {
                "steps": options.scaling,
                "servers": options.servers,
                "workloads": options.workloads,
                "group_size": options.group_size,
                "duration_s": options.duration,
                "rate_deliveries_per_s": options.rate,
                "w2_rate_deliveries_per_s": options.w2_rate,
                "burst_deliveries": options.burst,
                "loadgen_procs": procs,
                "concurrency": options.concurrency,
                "prefetch": options.prefetch,
                "service_env": options.service_env,
            },
            "runtime_s": round(time.monotonic() - started, 1),
            "logs": str(workdir),
            "complete": len(steps) == len(options.scaling),
            "ok": all(row["lost"] == 0 and not row["failed_connections"] for row in table),
            "table": table,
            "steps": steps,
        }
        _write_scaling(options.output, result)  # a run cut short keeps the steps it measured
    return result


def _write_scaling(output: Path, result: dict[str, Any]) -> str:
    output.mkdir(parents=True, exist_ok=True)
    (output / "scaling.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    markdown = render_scaling_markdown(result)
    (output / "scaling.md").write_text(markdown)
    return markdown


async def _main(options: Options, argv: list[str], workdir: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # Explicit for both: a shell that starts us in the background ignores SIGINT otherwise.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    if options.scaling:
        print(f"[bench] logs in {workdir}", file=sys.stderr, flush=True)
        return await asyncio.wait_for(_scaling(options, argv, workdir), options.timeout)
    run = Run(options, workdir)
    run.argv = argv
    run.log(f"logs in {workdir}")
    return await asyncio.wait_for(run.run(), options.timeout)


def main(argv: list[str] | None = None) -> int:
    from config.settings import LogFormat
    from service.logs import configure_logging

    options, raw_argv = parse_args(argv)
    configure_logging("WARNING", LogFormat.CONSOLE)  # library log lines on stderr, only when they matter
    raise_fd_limit()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))  # logs, the dev signing key, profiles
    try:
        result = runner(_main(options, raw_argv, workdir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("[bench] interrupted; stopped every process it started", file=sys.stderr)
        return 130
    except TimeoutError:
        print(
            f"[bench] timed out after {options.timeout:.0f} s; stopped every process it started",
            file=sys.stderr,
        )
        return 1
    finally:
        kill_all()
    if options.scaling:
        ok = bool(result["ok"])
        keep = not ok or options.profile or options.keep_logs
        if not keep:
            result["logs"] = None
        markdown = _write_scaling(options.output, result)
    else:
        summary = summarize(result)
        result["summary"] = summary
        ok = bool(summary["ok"])
        keep = not ok or options.profile or options.keep_logs
        if not keep:
            result["logs"] = None
        options.output.mkdir(parents=True, exist_ok=True)
        (options.output / "latest.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        markdown = render_markdown(result)
        (options.output / "latest.md").write_text(markdown)
    print(markdown)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"[bench] logs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1
