"""What receiving one message costs the consumer's process, by arrival rate and by source.

``python -m bench.read_cost`` consumes a classic queue and a stream (interleaved) the way the
service consumes its stream (aiormq's ``basic_consume``, uvloop, prefetch 1,000 for the stream and
100 for the classic queue, credit every half window), while a child process publishes the
benchmark's events at a steady rate (``bench.broker.Broker.publish_rate``). It prints the consumer
process's CPU per message (µs) from the first message to the last: with the publisher in another
process, that is the read path alone — the epoll wake, aiormq's reader and channel tasks, the
callback's task — with nothing else in the figure. ``python -m bench.consume_path`` gives the same
read path draining a backlog, where many messages share a wake.

Every queue and exchange it declares is deleted before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import aiormq
from aiormq.abc import DeliveredMessage

from bench.broker import Broker
from bench.broker_floor import PREFETCH, SOURCES, open_source

__all__ = ["SOURCES", "ReadRun", "main", "measure", "names"]

_ROOT = Path(__file__).resolve().parents[1]  # where ``python -m bench.read_cost`` finds ``bench``


@dataclass
class ReadRun:
    source: str
    rate: int
    published: int
    received: int
    cpu_us_per_message: float | None
    """None when fewer than two messages arrived (no interval to measure)."""


def names(tag: str) -> tuple[str, str]:
    """The exchange and the queue of one measurement."""
    return f"bench.read.{tag}.x", f"bench.read.{tag}.q"


async def measure(amqp: str, source: str, rate: int, seconds: float, *, tag: str | None = None) -> ReadRun:
    """Consume one ``source`` while a child process publishes ``rate`` events/s for ``seconds``."""
    exchange, queue = names(tag or uuid.uuid4().hex[:8])
    setup = Broker(amqp)
    await setup.connect()
    connection = await aiormq.connect(amqp)
    try:
        channel = await connection.channel()
        await open_source(setup, channel, exchange, queue, source)
        stream = source == "stream"
        credit_every = PREFETCH[source] // 2
        received = 0
        unacked = 0
        first_cpu = last_cpu = 0.0
        expected: int | None = None
        all_in = asyncio.Event()

        async def on_message(message: DeliveredMessage) -> None:
            nonlocal received, unacked, first_cpu, last_cpu
            last_cpu = time.process_time()
            if not received:
                first_cpu = last_cpu
            received += 1
            unacked += 1
            if unacked >= credit_every and message.delivery_tag is not None:
                unacked = 0
                await channel.basic_ack(message.delivery_tag, multiple=True)
            if expected is not None and received >= expected:
                all_in.set()

        await channel.basic_consume(
            queue, on_message, arguments={"x-stream-offset": "next"} if stream else {}
        )
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.read_cost", "--amqp", amqp, "--publish", exchange,
            "--rates", str(rate), "--seconds", str(seconds), stdout=asyncio.subprocess.PIPE, cwd=_ROOT,
        )  # fmt: skip
        out, _ = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the publisher exited with {child.returncode}")
        expected = int(json.loads(out)["published"])
        if received >= expected:
            all_in.set()
        with contextlib.suppress(TimeoutError):  # what did not come within 10 s counts as missing
            await asyncio.wait_for(all_in.wait(), 10.0)
        per_message = (last_cpu - first_cpu) / (received - 1) if received > 1 else None
        return ReadRun(
            source=source,
            rate=rate,
            published=expected,
            received=received,
            cpu_us_per_message=None if per_message is None else round(1e6 * per_message, 1),
        )
    finally:
        with contextlib.suppress(Exception):
            await connection.close()  # first: deleting a queue under its consumer logs a cancellation
        await setup.cleanup(queues=[queue], exchanges=[exchange])
        await setup.close()


async def _publish(amqp: str, exchange: str, rate: int, seconds: float) -> int:
    publisher = Broker(amqp)
    await publisher.connect()
    try:
        result = await publisher.publish_rate(
            exchange, 1, rate=rate, duration=seconds, region_of=lambda index: f"g{index % 100}"
        )
    finally:
        await publisher.close()
    return result.count


def _table(runs: Sequence[ReadRun]) -> str:
    lines = [
        "| source | events/s | received / published | consumer CPU µs per message |",
        "|---|---|---|---|",
    ]
    for run in runs:
        cost = "–" if run.cpu_us_per_message is None else f"{run.cpu_us_per_message:.1f}"
        lines.append(f"| {run.source} | {run.rate:,} | {run.received:,} / {run.published:,} | {cost} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.read_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--rates", default="300,1000,3000", help="events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="publishing time per source and rate")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each source at each rate")
    parser.add_argument("--output", type=Path, help="write the runs as JSON here")
    parser.add_argument("--publish", metavar="EXCHANGE", help=argparse.SUPPRESS)  # the child's role
    args = parser.parse_args(argv)
    rates = [int(rate) for rate in args.rates.split(",") if rate]
    import uvloop  # as the service runs

    if args.publish:
        count = uvloop.run(_publish(args.amqp, args.publish, rates[0], args.seconds))
        print(json.dumps({"published": count}))
        return 0

    async def run_all() -> list[ReadRun]:
        runs: list[ReadRun] = []
        for rate in rates:
            for _ in range(args.repeat):
                for source in SOURCES:  # interleaved: the box's noise falls on both alike
                    runs.append(await measure(args.amqp, source, rate, args.seconds))
                    print(_table(runs[-1:]).splitlines()[-1], flush=True)
        return runs

    runs: list[ReadRun] = uvloop.run(run_all())
    print()
    print(_table(runs))
    if args.output is not None:
        args.output.write_text(json.dumps([asdict(run) for run in runs], indent=1) + "\n")
    missing = sum(run.published - run.received for run in runs)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
