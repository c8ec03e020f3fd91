"""The command line of ``python -m bench`` and the ``Options`` it becomes.

Its own module so that every part of a run (``bench.run``, ``bench.phases``) reads the options without
importing the entry point (``bench.cli``), and the servers and workloads a run can name are listed once.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bench.procs import loadgen_procs_for

# ``--help``'s description: the first paragraph of ``bench.cli``'s docstring.
DESCRIPTION = (
    "``python -m bench``: the fan-out benchmark, one server process at a time, against one load generator."
)
RESULTS = Path(__file__).resolve().parent / "results"
SERVERS = ("service", "service-msgpack", "socketio", "raw", "raw-stream", "raw-logged")
# raw-stream (the floor reading a stream, as the service does) and raw-logged (reading a classic queue
# while the broker also writes the stream, unread): opt-in
DEFAULT_SERVERS = SERVERS[:4]
LABELS = {
    "service": "this service (SignalR JSON)",
    "service-msgpack": "this service (SignalR MessagePack)",
    "socketio": "python-socketio 5 (AsyncServer, aiohttp)",
    "raw": "raw aiohttp floor",
    "raw-stream": "raw aiohttp floor, stream source",
    "raw-logged": "raw aiohttp floor, classic queue + stream written",
}
WORKLOADS = ("W1", "W2", "W3")


@dataclass
class Options:
    servers: list[str]
    workloads: list[str]
    connections: int
    group_size: int
    duration: float
    rate: float
    w2_rate: float
    burst: int
    find_max: bool
    step_duration: float
    concurrency: int
    amqp: str
    port: int
    prefetch: int | None
    timeout: float
    output: Path
    service_env: dict[str, str] = field(default_factory=dict)
    quick: bool = False
    profile: bool = False
    keep_logs: bool = False
    loadgen_procs: int = 0  # 0: one per 9,500 clients (bench.procs.loadgen_procs_for)
    scaling: list[int] = field(default_factory=list)  # connections per step (bench.scaling)
    refine: int = 2  # --find-max steps that bisect the bracket after the ladder (bench.rate_search)

    @property
    def groups(self) -> int:
        return max(1, self.connections // self.group_size)

    @property
    def procs(self) -> int:
        """Load-generator processes for this run's clients."""
        return self.loadgen_procs or loadgen_procs_for(self.connections)


def parse_args(argv: list[str] | None) -> tuple[Options, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    parser.add_argument(
        "--servers", default=",".join(DEFAULT_SERVERS), help=f"comma-separated of {', '.join(SERVERS)}"
    )
    parser.add_argument("--workloads", default="W1,W2,W3", help="comma-separated of W1, W2, W3")
    parser.add_argument("--connections", type=int, help="WebSocket clients (default 10000; quick 1000)")
    parser.add_argument("--group-size", type=int, default=10, help="W1 members per group (default 10)")
    parser.add_argument("--duration", type=float, help="seconds of each steady phase (default 10; quick 3)")
    parser.add_argument(
        "--rate",
        type=float,
        help="steady deliveries/s: W1 events/s × group size, W2 events/s × connections "
        "(default 10000; quick 2000; --scaling 5000)",
    )
    parser.add_argument(
        "--w2-rate",
        type=float,
        help="W2's steady deliveries/s when it should differ from --rate (default: --rate; --scaling 20000)",
    )
    parser.add_argument(
        "--burst",
        type=int,
        help="deliveries per saturation burst, 0: no bursts (default 200000; quick 20000; --scaling 0)",
    )
    parser.add_argument("--find-max", action="store_true", help="step the rate up to the max sustainable one")
    parser.add_argument("--step-duration", type=float, default=5.0, help="seconds per --find-max step")
    parser.add_argument(
        "--refine",
        type=int,
        default=2,
        help="--find-max steps bisecting between the highest passing and lowest failing rate (default 2)",
    )
    parser.add_argument("--concurrency", type=int, default=100, help="clients connecting at once in W3")
    parser.add_argument(
        "--amqp", default=os.environ.get("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
    )
    parser.add_argument("--port", type=int, default=5150, help="first server port (each server gets its own)")
    parser.add_argument(
        "--prefetch",
        type=int,
        help="consumer prefetch for every server (default: each server's own — the service's "
        "PREFETCH_COUNT, 1000 for raw-stream, 100 for the other comparison servers; see bench/NOTES.md)",
    )
    parser.add_argument("--timeout", type=float, help="hard limit for the whole run, seconds")
    parser.add_argument("--output", type=Path, default=RESULTS, help="directory for latest.json / latest.md")
    parser.add_argument(
        "--service-env", action="append", default=[], metavar="KEY=VALUE", help="extra env for the service"
    )
    parser.add_argument("--quick", action="store_true", help="1,000 connections, a few seconds per phase")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy each server during its bursts (collapsed stacks in the log dir)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the log directory after a good run")
    parser.add_argument(
        "--loadgen-procs",
        type=int,
        default=0,
        help="load-generator processes sharing the clients (default: one per 9,500 clients)",
    )
    parser.add_argument(
        "--scaling",
        metavar="N,N,...",
        help="the scaling table instead (bench.scaling): each server at each number of connections, "
        "W3 + W1 and W2 steady; results in scaling.json / scaling.md",
    )
    args = parser.parse_args(argv)
    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    workloads = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    for name in servers:
        if name not in SERVERS:
            parser.error(f"unknown server {name!r}")
    for name in workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}")
    quick = args.quick
    scaling = [int(step) for step in (args.scaling or "").split(",") if step.strip()]
    if args.scaling is not None:
        if not scaling or min(scaling) < 1:
            parser.error("--scaling wants connections per step, e.g. 1000,5000,10000,19000")
        if args.connections or args.find_max or quick:
            parser.error("--scaling sets the connections per step; no --connections, --find-max, --quick")
    if args.loadgen_procs < 0:
        parser.error("--loadgen-procs must be ≥ 0 (0: automatic)")
    rate = args.rate or (2000.0 if quick else 5000.0 if scaling else 10_000.0)
    default_burst = 20_000 if quick else 0 if scaling else 200_000
    options = Options(
        servers=servers,
        workloads=workloads,
        connections=args.connections or (1000 if quick else max(scaling) if scaling else 10_000),
        group_size=args.group_size,
        duration=args.duration or (3.0 if quick else 10.0),
        rate=rate,
        w2_rate=args.w2_rate or (20_000.0 if scaling else rate),
        burst=default_burst if args.burst is None else max(0, args.burst),
        find_max=args.find_max,
        step_duration=args.step_duration,
        concurrency=args.concurrency,
        amqp=args.amqp,
        port=args.port,
        prefetch=args.prefetch,
        timeout=args.timeout or (300.0 if quick else 3600.0),
        output=args.output,
        service_env=dict(item.split("=", 1) for item in args.service_env),
        quick=quick,
        profile=args.profile,
        keep_logs=args.keep_logs,
        loadgen_procs=args.loadgen_procs,
        scaling=scaling,
        refine=max(0, args.refine),
    )
    return options, sys.argv[1:] if argv is None else list(argv)
