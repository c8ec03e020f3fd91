"""``python -m bench.event_path``: what one event costs the service in process, stage by stage.

The fan-out benchmark measures whole processes (sockets, the broker, the load generator, a shared
machine): a few per cent move between runs. This takes the sockets and the broker away and times
each stage of the service's path for one W1 event (a group of ``--group-size``) against what the
raw floor does for the same event (``bench/servers/raw.py``: parse the region, frame once, write to
every member), so the CPU gap to the floor can be attributed:

- *delivery*: the stream entry's ``Delivery`` (its check, ``schemas.log.entry_check``);
- *classify*: markers, the dedup window, content headers, ``schemas.parse_event`` (pydantic);
- *record + history*: the log record (the client payload) and the replay history entry;
- *dedup*: remembering the message key;
- *fan-out*: lifetime manager → hub connections → WebSocket sinks → ``transport.write`` (a
  transport that only counts), once per member.

Each stage is timed over ``--events`` events, best of ``--repeat`` rounds (the least disturbed).
Not a pass/fail test: it prints microseconds per event.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import gc
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson
import structlog

from config.settings import Transport
from consumers.dedup import DuplicateFilter
from consumers.handling import Deliver, Delivery, classify
from service.auth import GroupPolicy, Principal
from service.connections import ConnectionManager
from service.hub import (
    EventJournal,
    History,
    HubClock,
    HubConnectionHandler,
    HubMethods,
    HubOptions,
    InMemoryHubLifetimeManager,
    RecommendationsHub,
)
from service.transports.websockets import WebSocketSink
from service.write_batch import WriteBatch

from .wire import event_body, job_id, unmasked_frame

T = TypeVar("T")
R = TypeVar("R")

HANDSHAKE = b'{"protocol":"json","version":1}\x1e'


class CountingTransport:
    """An ``asyncio.Transport`` stand-in for a socket that takes everything: counts the writes."""

    def __init__(self) -> None:
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def _principal() -> Principal:
    return Principal(
        subject=str(uuid.uuid4()),
        username=None,
        token_use="access",  # noqa: S106 - a token kind, not a secret
        roles=frozenset({"Admin"}),
        regions=frozenset(),
        contractor_id=None,
        expires_at=time.time() + 3600,
    )


async def _hub(
    connections: int, groups: int
) -> tuple[EventJournal, list[list[CountingTransport]], HubConnectionHandler, ConnectionManager]:
    lifetime = InMemoryHubLifetimeManager()
    history = History(max_entries=200_000, max_bytes=128 << 20, max_age_seconds=600, clock=time.time)
    journal = EventJournal(lifetime, history, replay_cap=1000, resume_wait_seconds=0, close_positioned=print)
    handler = HubConnectionHandler(
        HubMethods.of(RecommendationsHub(GroupPolicy(), journal)),
        options=HubOptions(),
        lifetime=lifetime,
        clock=HubClock(time.monotonic, time.time),
    )
    manager = ConnectionManager(handler, disconnect_timeout=15, clock=time.monotonic)
    batch = WriteBatch()
    sockets: list[list[CountingTransport]] = [[] for _ in range(groups)]
    for index in range(connections):
        connection = manager.create(principal=_principal(), negotiate_version=1, stateful_reconnect=False)
        transport = CountingTransport()
        sink = WebSocketSink(
            transport,  # type: ignore[arg-type]
            connection,
            batch=batch,
            max_buffered=1 << 17,
            send_timeout=5.0,
        )
        manager.attach(connection, Transport.WEBSOCKETS, sink)
        await manager.receive(connection, HANDSHAKE)
        lifetime.add_to_group(connection.connection_id, f"dispatch/g{index % groups}")
        sockets[index % groups].append(transport)
    return journal, sockets, handler, manager


def _best(stage: Callable[[T], R], items: Sequence[T], repeat: int) -> float:
    """Microseconds per item, best of ``repeat`` rounds over ``items``."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for item in items:
            stage(item)
        best = min(best, (time.perf_counter() - started) / len(items))
    return best * 1e6


async def measure(connections: int, group_size: int, events: int, repeat: int) -> dict[str, float]:
    groups = max(1, connections // group_size)
    journal, sockets, handler, manager = await _hub(connections, groups)
    stamp = datetime.datetime.now(datetime.UTC)
    rounds = [
        [
            Delivery(
                offset=r * events + i,
                body=event_body(job_id(i, r, i), f"g{i % groups}"),
                exchange="recommendations",
                routing_key="recommendation.ready",
                message_id=str(uuid.uuid4()),
                content_type="application/json",
                timestamp=stamp,
                headers={"x-stream-offset": r * events + i},
            )
            for i in range(events)
        ]
        for r in range(repeat + 1)
    ]
    dedup = DuplicateFilter(60.0, 1_000_000)
    gc.collect()
    gc.freeze()  # the hub's connections, as GC_FREEZE does after a storm
    first = rounds[0]

    def rebuild(delivery: Delivery) -> Delivery:
        return dataclasses.replace(delivery)  # a new entry: its check is computed again

    def classified(delivery: Delivery) -> Deliver:
        outcome = classify(delivery, duplicates=dedup, max_event_bytes=2048)
        assert isinstance(outcome, Deliver)
        return outcome

    outcomes = [classified(delivery) for delivery in first]
    pairs = list(zip(outcomes, first, strict=True))
    records = [outcome.record(delivery) for outcome, delivery in zip(outcomes, first, strict=True)]
    frames_by_region = {f"g{g}": list(sockets[g]) for g in range(groups)}

    def floor(delivery: Delivery) -> None:  # bench/servers/raw.py on_event
        members = frames_by_region[orjson.loads(delivery.body)["region"]]
        frame = unmasked_frame(delivery.body)
        for transport in members:
            if not transport.is_closing():
                transport.write(frame)

    figures = {
        "delivery": _best(rebuild, first, repeat),
        "classify": _best(classified, first, repeat),
        "record": _best(lambda pair: pair[0].record(pair[1]), pairs, repeat),
        "history": _best(journal.record, records, 1),
        "dedup": _best(lambda outcome: dedup.remember(outcome.key), outcomes, repeat),
        "fan-out": _best(journal.deliver, records, repeat),
    }
    written = sum(transport.writes for group in sockets for transport in group)
    expected = connections + repeat * len(records) * group_size  # handshake replies, then events
    if written != expected:
        raise RuntimeError(f"the fan-out wrote {written} frames, expected {expected}")
    figures["service"] = sum(figures.values())
    figures["floor"] = _best(floor, first, repeat)
    figures["heartbeat round ms"] = _heartbeat_round_ms(handler, manager, groups, journal, records, repeat)
    return figures


def _heartbeat_round_ms(
    handler: HubConnectionHandler,
    manager: ConnectionManager,
    groups: int,
    journal: EventJournal,
    records: Sequence[Any],
    repeat: int,
) -> float:
    """One heartbeat round over every connection (hub timers and the manager's scan, in one call
    each here; the service spreads a round over steps of at most 125 connections), while every
    group gets an event between rounds (W1 at 500 events/s and 1,000 groups gives each about one every
    two seconds): milliseconds, best of ``repeat`` rounds."""
    best = float("inf")
    for round_ in range(repeat + 2):
        for record in records[:groups]:
            journal.deliver(record)
        started = time.perf_counter()
        handler.tick(0, 1)
        manager.scan(0, 1)
        elapsed = time.perf_counter() - started
        if round_ >= 2:  # the first rounds after connecting visit everyone (see HubConnection.tick)
            best = min(best, elapsed)
    return best * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.event_path", description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--group-size", type=int, default=10)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    # connection.connected lines are not what is measured
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    figures = asyncio.run(measure(args.connections, args.group_size, args.events, args.repeat))
    print(
        f"one W1 event, {args.group_size} members, {args.connections} connections (µs, best of {args.repeat})"
    )
    round_ms = figures.pop("heartbeat round ms")
    for stage, value in figures.items():
        print(f"  {stage:<10} {value:7.2f}")
    print(f"  gap       {figures['service'] - figures['floor']:7.2f}  (service − floor, in process)")
    print(
        f"one heartbeat round over {args.connections} connections: {round_ms:.2f} ms (best of {args.repeat})"
    )


if __name__ == "__main__":
    main()
