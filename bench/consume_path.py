"""What reading one stream entry costs the consumer: aio-pika's ``Queue.consume`` against aiormq's.

``python -m bench.consume_path`` fills a stream with N events, then reads all of them from the
start, once per way, alternating: through aio-pika's ``Queue.consume`` (an ``IncomingMessage`` per
delivery, the callback in a task of its own) and through aiormq's ``basic_consume`` on the same
channel (the message as parsed, as ``consumers.amqp.consume`` registers the service's consumer).
Both put the message in a queue that one worker empties, crediting every 500 (prefetch 1,000), as
the service does. It prints the process's CPU per delivery for each way. The stream is deleted
before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import aio_pika
import aiormq
from pamqp import commands as spec

from bench.servers.feed import STREAM_PREFETCH, default_stream_arguments
from bench.wire import event_body, job_id

__all__ = ["WAYS", "consume_cost", "main"]

WAYS = ("aio-pika", "aiormq")
_PREFETCH = STREAM_PREFETCH  # the service's PREFETCH_COUNT default


async def _read_all(channel: aio_pika.abc.AbstractChannel, stream: str, way: str, count: int) -> float:
    """CPU seconds of this process per delivery to read ``count`` entries of ``stream`` one way."""
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    done = asyncio.Event()

    async def worker() -> None:
        got = 0
        while got < count:
            message = await inbox.get()
            got += 1
            if got % (_PREFETCH // 2) == 0 or got == count:
                if way == "aio-pika":
                    await message.ack(multiple=True)
                else:
                    await message.channel.basic_ack(message.delivery_tag, multiple=True)
        done.set()

    async def put(message: Any) -> None:
        inbox.put_nowait(message)

    task = asyncio.create_task(worker())
    started = time.process_time()
    arguments: dict[str, Any] = {"x-stream-offset": "first"}
    if way == "aio-pika":
        queue = await channel.get_queue(stream)
        await queue.consume(put, arguments=arguments)
    else:
        underlay = await channel.get_underlay_channel()
        await underlay.basic_consume(stream, put, arguments=arguments)
    await done.wait()
    cost = (time.process_time() - started) / count
    await task
    return cost


async def consume_cost(
    amqp: str, count: int, rounds: int, *, stream: str | None = None
) -> dict[str, list[float]]:
    """µs of CPU per delivery for each way, ``rounds`` times, on one stream of ``count`` entries."""
    stream = stream or f"bench.consume.{uuid.uuid4().hex[:8]}"
    connection = await aio_pika.connect(amqp)
    publisher = await aiormq.connect(amqp)
    costs: dict[str, list[float]] = {way: [] for way in WAYS}
    try:
        setup = await connection.channel()
        await setup.declare_queue(stream, durable=True, arguments=default_stream_arguments())
        confirms = await publisher.channel(publisher_confirms=True)
        properties = spec.Basic.Properties(content_type="application/json", delivery_mode=1)
        for begin in range(0, count, 500):
            sends = []
            for index in range(begin, min(count, begin + 500)):
                body = event_body(job_id(0, 0, index), f"g{index % 1000}")
                sends.append(confirms.basic_publish(body, routing_key=stream, properties=properties))
            await asyncio.gather(*sends)
        for _ in range(rounds):
            for way in WAYS:  # alternating: the box's noise falls on both alike
                channel = await connection.channel()
                await channel.set_qos(prefetch_count=_PREFETCH)
                costs[way].append(round(1e6 * await _read_all(channel, stream, way, count), 1))
                await channel.close()
    finally:
        with contextlib.suppress(Exception):
            cleanup = await connection.channel()
            await cleanup.queue_delete(stream)
        await publisher.close()
        await connection.close()
    return costs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.consume_path", description=__doc__.split("\n")[0])
    parser.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("--count", type=int, default=30_000, help="entries in the stream")
    parser.add_argument("--rounds", type=int, default=2, help="reads of the whole stream per way")
    args = parser.parse_args(argv)
    import uvloop  # as the service runs

    costs = uvloop.run(consume_cost(args.amqp, args.count, args.rounds))
    print(f"CPU per delivery reading {args.count:,} stream entries (µs, {args.rounds} rounds):")
    for way, values in costs.items():
        print(f"  {way:9s} {' / '.join(f'{value:.1f}' for value in values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
