"""One benchmark run: each server of ``--servers`` in turn, started, stormed (W3), measured (W1, W2), stopped.

``Run.measure`` is one server from start to cleanup, ``Run._workload`` one workload's phases (from
``bench.phases``), ``Run.run`` every server and the result dict that ``bench.cli`` writes.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from bench.machine import machine_facts, speed_probe
from bench.options import LABELS
from bench.phases import Phases
from bench.procs import Child, LoadGenPool
from bench.service import SERVICE_LAUNCHER, mint_tokens, service_env, service_queues, wait_server_ready
from bench.wire import BROADCAST_GROUP, group_name

ROOT = Path(__file__).resolve().parent.parent
FD_MARGIN = 200  # a server's files beyond its clients: broker link, listener, /metrics, logs, libraries


class Run(Phases):
    """``measure`` one server, ``run`` them all into the result dict."""

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
            if name == "raw-logged":  # the stream the service keeps, written by the broker and never read
                argv += ["--keep-stream", f"{prefix}.log"]
                cleanup_queues.append(f"{prefix}.log")
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
            kind = "signalr" if name.startswith("service") else name.split("-")[0]  # raw-stream: a raw client
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

    # --- the whole run ------------------------------------------------------------------------

    async def run(self) -> dict[str, Any]:
        options = self.options
        (self.workdir / "empty.env").write_text("")
        key_dir = self.workdir / "keys"
        tokens = await asyncio.to_thread(mint_tokens, key_dir, [f"bench-{n}" for n in range(32)])
        await self.broker.connect()
        results: dict[str, Any] = {}
        speed_before = speed_probe()
        started = time.monotonic()
        try:
            for offset, name in enumerate(options.servers):
                self.log(f"=== {LABELS[name]} ===")
                results[name] = await self.measure(name, options.port + offset, tokens, key_dir)
        finally:
            await self.broker.close()
        runtime = time.monotonic() - started
        machine = machine_facts(self.broker.server_version)
        machine["speed_probe_ms"] = {"before": speed_before, "after": speed_probe()}
        return {
            "command": "python -m bench " + " ".join(shlex.quote(a) for a in self.argv),
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": machine,
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
            "runtime_s": round(runtime, 1),
            "logs": str(self.workdir),
            "servers": results,
        }
