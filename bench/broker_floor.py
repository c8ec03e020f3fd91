"""The floor under the floors: RabbitMQ alone, a classic queue against a stream, no server at all.

``python -m bench.broker_floor`` publishes the benchmark's events the way ``python -m bench`` does
(``bench.broker.Broker``: confirmed batches, the publish time in every ``jobId``) to an exchange
bound to one queue, and consumes that queue in the same process — a classic queue as the ``raw``
floor reads, then a stream as the service and ``raw-stream`` read (``x-stream-offset: next``,
prefetch 1,000, credit every 500). Per source and rate it prints the publish → consume latency
(p50 / p99 / max), the broker's CPU (% of one core) and the client process's (publisher and
consumer): what the source alone adds to every server's figures before a single WebSocket is
written. ``--write-only`` adds, per source and rate, a run with no consumer at all: what the broker
spends writing the events into that source, so that reading them is the difference.

Every queue and exchange it declares is deleted before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiormq
from aiormq.abc import DeliveredMessage

from bench.broker import Broker
from bench.loadgen import percentiles
from bench.procs import BrokerCpu
from bench.servers.feed import CLASSIC_PREFETCH, STREAM_PREFETCH, default_stream_arguments
from bench.wire import decode_job_id, now_us

__all__ = ["PREFETCH", "SOURCES", "SourceRun", "main", "measure", "names", "open_source"]

SOURCES = ("classic", "stream")
PREFETCH = {"classic": CLASSIC_PREFETCH, "stream": STREAM_PREFETCH}  # the raw floor's and the service's
_JOB_ID = b'"jobId":"'


@dataclass
class SourceRun:
    source: str
    rate: int
    seconds: float
    published: int
    received: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    broker_cpu_pct: float | None
    consumer_cpu_pct: float
    consumed: bool = True
    """False: a write-only run (nobody consumed; ``received`` is 0 and there is no latency)."""


def names(tag: str) -> tuple[str, str]:
    """The exchange and the queue of one measurement."""
    return f"bench.floor.{tag}.x", f"bench.floor.{tag}.q"


async def open_source(
    publisher: Broker, channel: aiormq.abc.AbstractChannel, exchange: str, queue: str, source: str
) -> None:
    """Declare ``exchange`` and a ``source`` queue bound to all of it; set the source's prefetch."""
    await publisher.declare_exchange(exchange)
    stream = source == "stream"
    arguments = default_stream_arguments() if stream else {}
    await channel.queue_declare(queue, durable=stream, arguments=arguments)
    await channel.queue_bind(queue, exchange, routing_key="#")
    await channel.basic_qos(prefetch_count=PREFETCH[source])


async def measure(
    amqp: str, source: str, rate: int, seconds: float, *, tag: str | None = None, consume: bool = True
) -> SourceRun:
    """Publish ``rate`` events/s for ``seconds`` through one ``source`` queue and consume them (or,
    ``consume=False``, leave them there: the broker's cost of writing them alone)."""
    exchange, queue = names(tag or uuid.uuid4().hex[:8])
    publisher = Broker(amqp)
    await publisher.connect()
    connection = await aiormq.connect(amqp)
    try:
        channel = await connection.channel()
        await open_source(publisher, channel, exchange, queue, source)
        stream = source == "stream"
        latencies: list[int] = []  # µs
        expected: int | None = None  # known once publishing is over
        all_in = asyncio.Event()
        unacked = 0
        credit_every = 1 if not stream else PREFETCH[source] // 2

        async def on_message(message: DeliveredMessage) -> None:
            nonlocal unacked
            body = message.body
            start = body.index(_JOB_ID) + len(_JOB_ID)
            published_us, _phase, _index = decode_job_id(body[start : body.index(b'"', start)])
            latencies.append(now_us() - published_us)
            if expected is not None and len(latencies) >= expected:
                all_in.set()
            unacked += 1
            if unacked >= credit_every and message.delivery_tag is not None:
                unacked = 0
                await channel.basic_ack(message.delivery_tag, multiple=True)

        consume_arguments: dict[str, Any] = {"x-stream-offset": "next"} if stream else {}
        if consume:
            await channel.basic_consume(queue, on_message, arguments=consume_arguments)
        broker = BrokerCpu.find(amqp)
        broker_before = broker.seconds()
        cpu_before = time.process_time()
        started = time.monotonic()
        result = await publisher.publish_rate(
            exchange, 1, rate=rate, duration=seconds, region_of=lambda index: f"g{index % 100}"
        )
        expected = result.count
        if len(latencies) >= expected or not consume:
            all_in.set()
        with contextlib.suppress(TimeoutError):  # what did not come within 10 s counts as lost
            await asyncio.wait_for(all_in.wait(), 10.0)
        wall = time.monotonic() - started
        broker_pct = broker.percent(broker_before, wall)
        consumer_pct = round(100.0 * (time.process_time() - cpu_before) / wall, 1)
        figures = percentiles(latencies) or {}
        return SourceRun(
            source=source,
            rate=rate,
            seconds=seconds,
            published=result.count,
            received=len(latencies),
            p50_ms=figures.get("p50"),
            p99_ms=figures.get("p99"),
            max_ms=figures.get("max"),
            broker_cpu_pct=broker_pct,
            consumer_cpu_pct=consumer_pct,
            consumed=consume,
        )
    finally:
        await publisher.cleanup(queues=[queue], exchanges=[exchange])
        with contextlib.suppress(Exception):
            await connection.close()
        await publisher.close()


def _table(runs: Sequence[SourceRun]) -> str:
    lines = [
        "| source | events/s | received / published | p50 / p99 / max ms | broker CPU % | client CPU % |",
        "|---|---|---|---|---|---|",
    ]
    for run in runs:
        broker = "–" if run.broker_cpu_pct is None else f"{run.broker_cpu_pct:.0f}"
        source = run.source if run.consumed else f"{run.source}, write only"
        lines.append(
            f"| {source} | {run.rate:,} | {run.received:,} / {run.published:,} | "
            f"{run.p50_ms} / {run.p99_ms} / {run.max_ms} | {broker} | {run.consumer_cpu_pct:.0f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.broker_floor", description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rates", default="500,1000,2500", help="events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing time per source and rate")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each source at each rate")
    parser.add_argument("--output", type=Path, help="write the runs as JSON here")
    parser.add_argument(
        "--write-only",
        action="store_true",
        help="also measure each source with no consumer: the broker's cost of writing alone",
    )
    args = parser.parse_args(argv)
    rates = [int(rate) for rate in args.rates.split(",") if rate]

    async def run_all() -> list[SourceRun]:
        runs: list[SourceRun] = []
        for rate in rates:
            for _ in range(args.repeat):
                for source in SOURCES:  # interleaved: the box's noise falls on both alike
                    for consume in (True, False) if args.write_only else (True,):
                        runs.append(await measure(args.amqp, source, rate, args.seconds, consume=consume))
                        print(_table(runs[-1:]).splitlines()[-1], flush=True)
        return runs

    runs = asyncio.run(run_all())
    print()
    print(_table(runs))
    if args.output is not None:
        args.output.write_text(json.dumps([asdict(run) for run in runs], indent=1) + "\n")
    lost = sum(run.published - run.received for run in runs if run.consumed)
    return 1 if lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
