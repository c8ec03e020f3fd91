"""``python -m bench.flood``: what one flooding connection costs everybody else (issue 11, item 5).

Four processes besides this one: the service (``LOG_LEVEL=INFO`` as in production, its own stream on
the benchmark's broker), a **bystander** (an ordinary client in a group, plus a ``/healthz`` poller)
and a **flooder** (``bench.flood_clients``). This process publishes ``--rate`` events/s to the
bystander's group for the whole run and runs, one after the other:

1. *idle*: ``--idle`` seconds with no flood;
2. for each scenario, ``--rounds`` floods one second apart:
   *unknown* — ``--invocations`` invocations of a method that does not exist, on one WebSocket;
   *valid* — as many ``JoinDispatchGroup`` invocations;
   *storm* — an abuser that reconnects at once whenever it is closed or refused, for
   ``--storm-seconds``, until it has sent ``--invocations``.

A flood's window runs from its first byte until the flooder is done (every completion read, or the
connection closed), and at least ``--window`` seconds. Figures per window: the bystander's event
latency (publish → receive) and ``/healthz`` latency, p50/p99/max over every round; the service's CPU
seconds; what the flooder saw (sent, completions, Close error, refusals). Printed as a table and
written to ``--output``/``flood-<label>.json``.

Absolute numbers depend on the machine (run on the 2-core box; see ``bench/NOTES.md``): compare
idle with flood in the same run, and runs with each other only on one machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.broker import Broker
from bench.procs import Child, LoadGenProcess, kill_all
from bench.service import SERVICE_LAUNCHER, mint_tokens, service_env, service_queues, wait_service_ready
from bench.wire import now_us

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
HUB_PATH = "/hub/recommendations"
REGION = "bystander"
SCENARIOS: dict[str, tuple[str, bool]] = {
    # name: (method, reconnect)
    "unknown": ("NoSuchMethod", False),
    "valid": ("JoinDispatchGroup", False),
    "storm": ("NoSuchMethod", True),
}


@dataclass
class Options:
    invocations: int
    per_frame: int
    in_flight: int
    rounds: int
    rate: float
    idle: float
    window: float
    storm_seconds: float
    healthz_interval: float
    scenarios: list[str]
    amqp: str
    port: int
    label: str
    output: Path
    timeout: float
    service_env: dict[str, str] = field(default_factory=dict)


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__.split("\n\n")[0])
    parser.add_argument("--invocations", type=int, default=10_000, help="invocations per flood")
    parser.add_argument("--per-frame", type=int, default=100, help="invocation records per WebSocket frame")
    parser.add_argument("--in-flight", type=int, default=1000, help="unanswered invocations at most")
    parser.add_argument("--rounds", type=int, default=3, help="floods per scenario (samples are pooled)")
    parser.add_argument("--rate", type=float, default=200.0, help="events/s published to the bystander")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of the idle window")
    parser.add_argument("--window", type=float, default=1.0, help="shortest flood window, seconds")
    parser.add_argument("--storm-seconds", type=float, default=3.0, help="how long the storm abuser tries")
    parser.add_argument("--healthz-interval", type=float, default=0.01, help="pause between /healthz polls")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"of {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--amqp", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument("--port", type=int, default=5190)
    parser.add_argument("--label", default="latest", help="names the result file flood-<label>.json")
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=900.0, help="hard limit for the whole run, seconds")
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE", help="extra env for the service"
    )
    args = parser.parse_args(argv)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    for name in scenarios:
        if name not in SCENARIOS:
            parser.error(f"unknown scenario {name!r}")
    return Options(
        invocations=args.invocations,
        per_frame=args.per_frame,
        in_flight=args.in_flight,
        rounds=args.rounds,
        rate=args.rate,
        idle=args.idle,
        window=args.window,
        storm_seconds=args.storm_seconds,
        healthz_interval=args.healthz_interval,
        scenarios=scenarios,
        amqp=args.amqp,
        port=args.port,
        label=args.label,
        output=args.output,
        timeout=args.timeout,
        service_env=dict(item.split("=", 1) for item in args.service_env),
    )


def log(message: str) -> None:
    print(f"[flood {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentiles(values: list[int]) -> dict[str, float] | None:
    """p50/p99/max in milliseconds of µs samples."""
    if not values:
        return None
    ordered = sorted(values)
    n = len(ordered)

    def at(q: float) -> float:
        return round(ordered[min(n - 1, int(q * n))] / 1000, 2)

    return {"n": n, "p50": at(0.50), "p99": at(0.99), "max": round(ordered[-1] / 1000, 2)}


def in_windows(samples: list[list[int]], windows: list[tuple[int, int]]) -> list[int]:
    """Latencies of the samples whose start time falls in one of ``windows``."""
    return [latency for started, latency in samples if any(a <= started < b for a, b in windows)]


class FloodRun:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.python = sys.executable
        self.broker = Broker(options.amqp)

    async def run(self) -> dict[str, Any]:
        options = self.options
        key_dir = self.workdir / "keys"
        bystander_token, abuser_token = await asyncio.to_thread(
            mint_tokens, key_dir, ["flood-bystander", "flood-abuser"]
        )
        prefix = f"bench.{self.run_id}.flood"
        exchange = f"{prefix}.recommendations"
        queues, exchanges = service_queues(prefix)
        await self.broker.connect()
        await self.broker.declare_exchange(exchange)
        port = options.port
        base = f"http://127.0.0.1:{port}"
        env = service_env(
            workdir=self.workdir,
            key_dir=key_dir,
            port=port,
            amqp=options.amqp,
            prefix=prefix,
            exchange=exchange,
            prefetch=100,
            log_level="INFO",
            extra=options.service_env,
        )
        env["PYTHONPATH"] = str(ROOT)
        server: Child | None = None
        clients: list[LoadGenProcess] = []
        publisher: asyncio.Task[Any] | None = None
        try:
            server = await Child.start("service", [self.python, "-c", SERVICE_LAUNCHER], env=env,
                                       log_dir=self.workdir, cwd=ROOT)  # fmt: skip
            await wait_service_ready(server, port)
            bystander = await LoadGenProcess.start(
                self.python, log_dir=self.workdir, name="bystander", module="bench.flood_clients",
                args=("bystander",),
            )  # fmt: skip
            clients.append(bystander)
            flooder = await LoadGenProcess.start(
                self.python, log_dir=self.workdir, name="flooder", module="bench.flood_clients",
                args=("flooder",),
            )  # fmt: skip
            clients.append(flooder)
            await bystander.call(
                "start", 30.0, base=base, path=HUB_PATH, token=bystander_token, region=REGION,
                interval=options.healthz_interval,
            )  # fmt: skip
            publisher = asyncio.create_task(
                self.broker.publish_rate(
                    exchange, 1, rate=options.rate, duration=24 * 3600, region_of=lambda _: REGION
                )
            )
            await asyncio.sleep(2.0)  # warm-up: the first events, the first polls
            windows: dict[str, list[tuple[int, int]]] = {}
            cpu: dict[str, float] = {}
            floods: dict[str, list[dict[str, Any]]] = {}
            log(f"idle for {options.idle:.0f} s")
            cpu0, start = server.cpu_seconds(), now_us()
            await asyncio.sleep(options.idle)
            windows["idle"] = [(start, now_us())]
            cpu["idle"] = server.cpu_seconds() - cpu0
            for scenario in options.scenarios:
                method, reconnect = SCENARIOS[scenario]
                windows[scenario], floods[scenario], cpu[scenario] = [], [], 0.0
                for round_ in range(options.rounds):
                    await asyncio.sleep(1.0)
                    cpu0, start = server.cpu_seconds(), now_us()
                    outcome = await flooder.call(
                        "flood", 300.0, base=base, path=HUB_PATH, token=abuser_token, method=method,
                        count=options.invocations, per_frame=options.per_frame,
                        window=options.in_flight, reconnect=reconnect,
                        duration=options.storm_seconds if reconnect else 300.0,
                    )  # fmt: skip
                    end = max(now_us(), start + int(options.window * 1e6))
                    await asyncio.sleep(max(0.0, (end - now_us()) / 1e6))
                    cpu[scenario] += server.cpu_seconds() - cpu0
                    windows[scenario].append((start, end))
                    floods[scenario].append(outcome)
                    log(
                        f"{scenario} #{round_ + 1}: {outcome['seconds']:.2f} s, sent {outcome['sent']}, "
                        f"completions {outcome['completions']}, closes {outcome['closes']}, "
                        f"refused {outcome['refused']}"
                    )
            await asyncio.sleep(1.0)  # the last window's events arrive
            publisher.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await publisher
            await asyncio.sleep(0.5)
            samples = await bystander.call("report", 60.0)
            metrics = await _metrics(base)
            return {
                "command": "python -m bench.flood " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "commit": _commit(),
                "options": {
                    "invocations": options.invocations,
                    "per_frame": options.per_frame,
                    "in_flight": options.in_flight,
                    "rounds": options.rounds,
                    "rate": options.rate,
                    "idle_s": options.idle,
                    "window_s": options.window,
                    "service_env": options.service_env,
                },
                "rows": [
                    _row(name, windows[name], samples, cpu[name], floods.get(name, []))
                    for name in ["idle", *options.scenarios]
                ],
                "bystander_errors": samples["errors"],
                "metrics": metrics,
                "service_log_lines": _count_lines(server.log_path),
            }
        finally:
            if publisher is not None:
                publisher.cancel()
            for client in clients:
                await client.stop()
            if server is not None:
                await server.stop()
            await self.broker.cleanup(queues=queues, exchanges=[exchange, *exchanges])
            await self.broker.close()


def _row(
    name: str,
    windows: list[tuple[int, int]],
    samples: dict[str, Any],
    cpu: float,
    floods: list[dict[str, Any]],
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "scenario": name,
        "window_s": round(sum(b - a for a, b in windows) / 1e6, 2),
        "service_cpu_s": round(cpu, 2),
        "event_ms": percentiles(in_windows(samples["events"], windows)),
        "healthz_ms": percentiles(in_windows(samples["healthz"], windows)),
    }
    if floods:
        refused: dict[str, int] = {}
        for flood in floods:
            for status, n in flood["refused"].items():
                refused[status] = refused.get(status, 0) + n
        row["flood"] = {
            "seconds": [round(f["seconds"], 2) for f in floods],
            "sent": sum(f["sent"] for f in floods),
            "completions": sum(f["completions"] for f in floods),
            "connections": sum(f["connections"] for f in floods),
            "closes": sum(f["closes"] for f in floods),
            "close_error": next((f["close_error"] for f in floods if f["close_error"]), None),
            "refused": refused,
            "refusal_text": next((f["refusal_text"] for f in floods if f["refusal_text"]), None),
            "retry_after": next((f["retry_after"] for f in floods if f["retry_after"]), None),
        }
    return row


async def _metrics(base: str) -> list[str]:
    """The /metrics lines that say what the limits did."""
    wanted = ("realtime_hub_rate_limited_total", "realtime_hub_connections_closed_total")
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as response:
        text = await response.text()
    return [line for line in text.splitlines() if line.startswith(wanted)]


def _count_lines(path: Path) -> int:
    with contextlib.suppress(OSError), path.open("rb") as handle:
        return sum(1 for _ in handle)
    return 0


def _commit() -> str:
    with contextlib.suppress(OSError):
        head = (ROOT / ".git").read_text().strip()
        if head.startswith("gitdir:"):
            git_dir = Path(head.split(":", 1)[1].strip())
            ref = (git_dir / "HEAD").read_text().strip()
            if ref.startswith("ref:"):
                common = git_dir.parent.parent if git_dir.parent.name == "worktrees" else git_dir
                ref_path = common / ref.split(":", 1)[1].strip()
                return ref_path.read_text().strip()[:12] if ref_path.exists() else ref
            return ref[:12]
    return "?"


def render(result: dict[str, Any]) -> str:
    def ms(stats: dict[str, float] | None, key: str) -> str:
        return "–" if stats is None else f"{stats[key]:g}"

    lines = [
        f"# Flood benchmark ({result['options']['invocations']:,} invocations a flood, "
        f"{result['options']['rounds']} rounds)",
        "",
        f"`{result['command']}` at {result['commit']}, {result['date']}",
        "",
        "| scenario | window s | service CPU s | events n | event p50 | event p99 | event max "
        "| /healthz p50 | /healthz p99 | /healthz max | flooder |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        event, health = row["event_ms"], row["healthz_ms"]
        flood = row.get("flood")
        what = ""
        if flood:
            what = (
                f"sent {flood['sent']:,}, completions {flood['completions']:,}, "
                f"connections {flood['connections']}, closed {flood['closes']}"
            )
            if flood["refused"]:
                what += f", refused {flood['refused']}"
        lines.append(
            f"| {row['scenario']} | {row['window_s']} | {row['service_cpu_s']} | "
            f"{event['n'] if event else 0} | {ms(event, 'p50')} | {ms(event, 'p99')} | {ms(event, 'max')} | "
            f"{ms(health, 'p50')} | {ms(health, 'p99')} | {ms(health, 'max')} | {what} |"
        )
    lines += [
        "",
        "Latencies in ms. The flooder columns are what it read: the service closes a socket that still "
        "has unread input, the kernel resets it, and the flooder may lose the last replies and the "
        "Close; the /metrics lines below are the service's own count.",
    ]
    floods = [row["flood"] for row in result["rows"] if row.get("flood")]
    closes = [flood["close_error"] for flood in floods if flood["close_error"]]
    if closes:
        lines.append(f"Close error: {closes[0]}")
    refusals = [flood for flood in floods if flood["refusal_text"]]
    if refusals:
        lines.append(f"Refusal: {refusals[0]['refusal_text']} (Retry-After: {refusals[0]['retry_after']})")
    lines += [f"Service log lines: {result['service_log_lines']:,}", *result["metrics"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from config.settings import LogFormat
    from service.logs import configure_logging

    options = parse_args(argv)
    configure_logging("WARNING", LogFormat.CONSOLE)
    workdir = Path(tempfile.mkdtemp(prefix="bench-flood-"))
    log(f"logs in {workdir}")
    try:
        result = asyncio.run(asyncio.wait_for(FloodRun(options, workdir).run(), options.timeout))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("[flood] interrupted; stopped every process it started", file=sys.stderr)
        return 130
    finally:
        kill_all()
    options.output.mkdir(parents=True, exist_ok=True)
    path = options.output / f"flood-{options.label}.json"
    path.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    print(render(result))
    log(f"written {path}; logs in {workdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
