"""The phases that measure one workload: steady (a rate for a while), burst (saturation), find-max.

Each phase publishes, waits for the load generator's counts and turns them into one dict of figures
(loss, latency, loop lag, server / load-generator / broker CPU). ``Phases`` also holds what every
phase shares — the options, the broker, the phase counter, the server being measured — and is the
base of ``bench.run.Run``, which starts the servers and strings the phases together.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from bench.broker import Broker, PublishResult
from bench.lag import Buckets, lag_between, scrape_histograms
from bench.options import Options
from bench.procs import BrokerCpu, Child, LoadGenPool
from bench.rate_search import RateSearch
from bench.wire import now_us

P99_LIMIT_MS = 100.0


class Phases:
    """The run's state and its measuring phases; ``bench.run.Run`` adds the servers and workloads."""

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

    # --- the phases of one workload ----------------------------------------------------------

    def _log_phase(self, name: str, workload: str, phase: str, stats: dict[str, Any]) -> None:
        latency = stats.get("latency_ms") or {}
        lag = stats.get("loop_lag") or {}
        full = stats.get("full_gc")
        passes = "" if full is None else f"full GC passes {full['passes']} (max ≤{full['max_ms']} ms), "
        self.log(
            f"{name}: {workload} {phase}: {stats['received']}/{stats['expected']} delivered, "
            f"{stats['deliveries_per_s']:.0f}/s, p99 {latency.get('p99')} max {latency.get('max')} ms, "
            f"loop lag p99 {lag.get('p99_ms')} / max {lag.get('max_ms')} ms, {passes}"
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
        lag0, gc0 = await scrape_histograms(self.port)
        cpu0, gen0, wall0 = server.cpu_seconds(), loadgen.cpu_seconds(), time.monotonic()
        broker0 = self.broker_cpu.seconds()
        published = await self.broker.publish_rate(
            exchange, phase, rate=events_per_s, duration=duration, region_of=region_of
        )
        stats = await self._collect(
            phase, published, sizes, server, loadgen, cpu0, gen0, wall0, broker0, duration + 60
        )
        lag1, gc1 = await scrape_histograms(self.port)
        stats["loop_lag"] = lag_between(lag0, lag1)
        stats["full_gc"] = _full_gc(gc0, gc1)
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
        search = RateSearch(
            max(start_rate / 2, float(fanout)),  # deliveries/s; at least one event per second
            lowest=fanout / options.step_duration,  # at least one event per step
            refine=options.refine,
        )
        steps: list[dict[str, Any]] = []
        while (rate := search.next()) is not None:
            refining = search.refining
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
                    "full_gc": stats.get("full_gc"),
                    "refine": refining,
                }
            )
            self.log(
                f"{name}: {workload} find-max {rate:.0f}/s: p99 {p99} ms, loop lag p99 "
                f"{lag.get('p99_ms')} / max {lag.get('max_ms')} ms, lost {stats['lost']} -> {passed}"
            )
            await asyncio.sleep(1.0)
            search.record(passed)
        best = search.best
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


def _full_gc(before: Buckets | None, after: Buckets | None) -> dict[str, Any] | None:
    """Full garbage collections the service ran in a phase: how many, the longest (bucket bound)."""
    if after is None:
        return None  # a comparison server: it has no such histogram
    passes = lag_between(before or dict.fromkeys(after, 0.0), after)
    if passes is None:
        return {"passes": 0, "max_ms": 0.0}
    return {"passes": passes["samples"], "max_ms": passes["max_ms"]}
