"""``python -m bench.soak`` (``make soak``): hours of ordinary life with faults, on loopback; not in CI.

What runs, all started here and all stopped at the end (even on Ctrl-C):

- a **private RabbitMQ node** on spare ports (``devkit.local_broker.PrivateBroker``: own node name,
  data and logs; the machine's broker is never touched), deleted afterwards;
- **two service instances** (development auth) reading the same stream;
- **clients** on every transport — WebSockets with JSON and with MessagePack, Server-Sent Events,
  Long Polling — each with positions and ``Resume`` (``bench.soak_clients``), each in two of the
  ``--regions`` dispatch groups, reconnecting (to an instance picked at random) whenever they lose
  their connection;
- a **publisher** sending ``--rate`` events/s with publisher confirms, retrying an unconfirmed
  event with the same ``message_id`` until the broker confirms it (the service drops the repeat),
  and one in ``--invalid-every`` an invalid one (dead-lettered by the service);
- **faults** every ``--fault-interval`` seconds, in turn: SIGTERM an instance (and start it again),
  restart the broker (graceful stop, start), SIGKILL an instance (and start it again).

Every ``--report-interval`` seconds it prints, per instance, RSS, RSS per hub connection, open file
descriptors, asyncio tasks and hub connections (from the instance's ``/metrics``), the stream's and
the dead-letter queue's depth (``rabbitmqctl list_queues``), and events published and kept by the
clients so far. At the end it stops the faults and the publisher, waits for the clients to catch up,
and checks the count: every valid event published reached every client whose groups it was for
exactly once (after skipping positions already seen, as the client pattern does; how many arrived
twice before that skip is shown too), and every invalid one is in the dead-letter queue. Exit
status 0 only when the check holds. The figures are also written to ``--output``/soak-<label>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson

from bench.procs import kill_all
from bench.service import mint_tokens, service_env
from bench.soak_clients import KINDS, SoakClient
from bench.soak_instances import Instance, scrape
from bench.soak_publisher import Publisher
from devkit.local_broker import PrivateBroker, free_port

RESULTS = Path(__file__).resolve().parent / "results"
FAULTS = ("sigterm", "broker", "sigkill")


@dataclass
class Options:
    duration: float
    rate: float
    clients: int
    regions: int
    fault_interval: float
    report_interval: float
    invalid_every: int
    settle_timeout: float
    label: str
    output: Path


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of publishing and faults")
    parser.add_argument("--rate", type=float, default=10.0, help="events per second")
    parser.add_argument("--clients", type=int, default=25, help="clients per transport (4 transports)")
    parser.add_argument("--regions", type=int, default=10, help="dispatch groups; each client joins two")
    parser.add_argument("--fault-interval", type=float, default=120.0, help="seconds between faults")
    parser.add_argument("--report-interval", type=float, default=30.0, help="seconds between figure lines")
    parser.add_argument("--invalid-every", type=int, default=100, help="one invalid event in N (0: none)")
    parser.add_argument("--settle-timeout", type=float, default=120.0, help="catch-up wait at the end")
    parser.add_argument("--label", default="latest", help="names the result file soak-<label>.json")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    return Options(
        duration=args.duration,
        rate=args.rate,
        clients=args.clients,
        regions=args.regions,
        fault_interval=args.fault_interval,
        report_interval=args.report_interval,
        invalid_every=args.invalid_every,
        settle_timeout=args.settle_timeout,
        label=args.label,
        output=args.output,
    )


def say(text: str) -> None:
    print(text, flush=True)


# --- the run ---------------------------------------------------------------------------------------


class Soak:
    def __init__(self, options: Options, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.prefix = f"soak.{uuid.uuid4().hex[:8]}"
        self.exchange = f"{self.prefix}.recommendations"
        self.broker = PrivateBroker(workdir / "rabbitmq")
        self.instances: list[Instance] = []
        self.clients: list[SoakClient] = []
        self.publisher = Publisher(self.broker.url, self.exchange, [f"r{i}" for i in range(options.regions)])
        self.faults: Counter[str] = Counter()
        self.dead_letters: Counter[str] = Counter()
        self.summary: dict[str, Any] | None = None
        self.missing: list[dict[str, Any]] = []
        self.fault_log: list[dict[str, Any]] = []
        self.rows: list[dict[str, Any]] = []
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    async def setup(self) -> None:
        say(f"soak: private RabbitMQ node on 127.0.0.1:{self.broker.port} ({self.broker.node})")
        await asyncio.to_thread(self.broker.start)
        key_dir = self.workdir / "keys"
        key_dir.mkdir()
        for name in ("a", "b"):
            port = free_port()
            workdir = self.workdir / name
            workdir.mkdir()
            env = service_env(
                workdir=workdir,
                key_dir=key_dir,
                port=port,
                amqp=self.broker.url,
                prefix=self.prefix,
                exchange=self.exchange,
                prefetch=300,
                extra={
                    "INSTANCE_ID": f"soak-{name}",
                    "BROKER_HEARTBEAT_SECONDS": "5",
                    "BROKER_RECONNECT_INTERVAL_SECONDS": "1",
                    "SHUTDOWN_TIMEOUT_SECONDS": "5",
                    "HUB_SHUTDOWN_DRAIN_SECONDS": "2",  # part of the 5 s above
                },
            )
            self.instances.append(Instance(name, port, env, self.workdir))
        await asyncio.gather(*(instance.start() for instance in self.instances))
        async with aiohttp.ClientSession() as session:
            for instance in self.instances:
                figures = await scrape(session, instance)
                instance.idle_rss = figures["rss"] if figures else None
        idle = ", ".join(f"{i.name} {(i.idle_rss or 0) / 2**20:.1f} MB" for i in self.instances)
        say(f"soak: instances on ports {', '.join(str(i.port) for i in self.instances)}; idle RSS {idle}")
        count = self.options.clients * len(KINDS)
        tokens = mint_tokens(key_dir, [f"soak-user-{n}" for n in range(count)], roles=("Admin",))
        bases = [instance.base for instance in self.instances]
        regions = self.publisher.regions
        for n, token in enumerate(tokens):
            kind = KINDS[n % len(KINDS)]
            groups = [f"dispatch/{regions[n % len(regions)]}", f"dispatch/{regions[(n + 1) % len(regions)]}"]
            self.clients.append(SoakClient(f"c{n}-{kind}", kind, token, groups, bases))

    async def run(self) -> bool:
        options = self.options
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            client_tasks = [asyncio.create_task(client.run(session)) for client in self.clients]
            try:
                # Everyone joined before the first event: then every event of a client's groups is owed.
                await asyncio.wait_for(asyncio.gather(*(c.joined.wait() for c in self.clients)), 120.0)
                say(
                    f"soak: {len(self.clients)} clients joined ({', '.join(KINDS)}); "
                    f"publishing {options.rate}/s"
                )
                self.started = time.monotonic()
                publishing = asyncio.create_task(self.publisher.run(options.rate, options.invalid_every))
                reporting = asyncio.create_task(self._report_every(session))
                await self._faults_until(self.started + options.duration)
                self.publisher.stopping = True
                await publishing
                reporting.cancel()
                say(
                    f"soak: publishing stopped after {self.elapsed():.0f} s; "
                    "waiting for the clients to catch up"
                )
                caught_up = await self._settle(options.settle_timeout)
                await self._sample(session, final=True)
                await self.collect_dead_letters()
                ok = self._check(caught_up)
                if not ok:
                    await self._explain_missing()
                return ok
            finally:
                for task in client_tasks:
                    task.cancel()
                await asyncio.gather(*client_tasks, return_exceptions=True)

    async def _faults_until(self, end: float) -> None:
        turn = instance_faults = 0
        while True:
            next_fault = time.monotonic() + self.options.fault_interval
            if next_fault >= end:
                await asyncio.sleep(max(0.0, end - time.monotonic()))
                return
            await asyncio.sleep(next_fault - time.monotonic())
            kind = FAULTS[turn % len(FAULTS)]
            turn += 1
            # a, b, b, a, a, b, …: each instance gets both SIGTERM and SIGKILL in turn.
            instance = self.instances[(instance_faults + instance_faults // 2) % len(self.instances)]
            if kind != "broker":
                instance_faults += 1
            started = time.monotonic()
            if kind == "broker":
                await asyncio.to_thread(self.broker.stop)
                await asyncio.to_thread(self.broker.start)
                target = "broker"
            elif kind == "sigterm":
                await instance.terminate()
                await self._restart(instance)
                target = instance.name
            else:
                await instance.kill()
                await self._restart(instance)
                target = instance.name
            took = time.monotonic() - started
            self.faults[kind] += 1
            self.fault_log.append(
                {
                    "at": round(started - self.started, 1),
                    "fault": kind,
                    "target": target,
                    "seconds": round(took, 1),
                }
            )
            say(f"soak: {self.elapsed():7.0f} s  fault {kind} on {target}, back after {took:.1f} s")

    async def _restart(self, instance: Instance) -> None:
        for attempt in range(1, 6):
            try:
                await instance.start()
                return
            except RuntimeError as error:
                say(f"soak: instance {instance.name} did not come back (attempt {attempt}): {error}")
                if instance.child is not None:
                    await instance.child.stop(2.0)
                await asyncio.sleep(5.0)
        raise RuntimeError(f"instance {instance.name} could not be restarted")

    async def _report_every(self, session: aiohttp.ClientSession) -> None:
        say(
            f"{'t (s)':>7} | {'inst':>4} | {'RSS MB':>7} | {'KB/conn':>7} | {'fds':>5} | {'tasks':>5} | "
            f"{'conns':>5} | {'stream':>7} | {'DLQ':>5} | {'published':>9} | {'kept':>9}"
        )
        while True:
            await asyncio.sleep(self.options.report_interval)
            await self._sample(session)

    async def _sample(self, session: aiohttp.ClientSession, *, final: bool = False) -> None:
        depths = await asyncio.to_thread(self._depths)
        owed, kept = self._progress()
        t = round(self.elapsed())
        for instance in self.instances:
            figures = await scrape(session, instance)
            row: dict[str, Any] = {"t": t, "instance": instance.name, "final": final, **depths}
            row.update(
                {
                    "published": len(self.publisher.valid) + len(self.publisher.invalid),
                    "owed": owed,
                    "kept": kept,
                }
            )
            if figures is None:
                say(f"{t:>7} | {instance.name:>4} | {'down':>7} |")
                row["down"] = True
                self.rows.append(row)
                continue
            # Memory per connection: above what the instance took idle at its first start, per hub
            # connection it holds now (a restarted process's own baseline is not measured again).
            above = figures["rss"] - (instance.idle_rss or 0.0)
            per_conn = round(above / 1024 / figures["connections"]) if figures["connections"] else None
            row.update(figures, rss_mb=round(figures["rss"] / 2**20, 1), kb_per_conn=per_conn)
            self.rows.append(row)
            shown = "-" if per_conn is None else str(per_conn)
            say(
                f"{t:>7} | {instance.name:>4} | {row['rss_mb']:>7} | {shown:>7} | "
                f"{figures['fds']:>5.0f} | {figures['tasks']:>5.0f} | {figures['connections']:>5.0f} | "
                f"{depths.get('stream', '-'):>7} | {depths.get('dlq', '-'):>5} | "
                f"{row['published']:>9} | {kept:>9}"
            )

    def _depths(self) -> dict[str, int]:
        try:
            out = self.broker.rabbitmqctl(
                "list_queues", "-q", "--no-table-headers", "name", "messages", timeout=30
            )
        except Exception:  # noqa: BLE001 - the broker may be restarting: no figure this time
            return {}
        depths: dict[str, int] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                if parts[0] == f"{self.prefix}.events":
                    depths["stream"] = int(parts[1])
                elif parts[0] == f"{self.prefix}.dlq":
                    depths["dlq"] = int(parts[1])
        return depths

    def _tally(self, client: SoakClient) -> tuple[int, int]:
        """(events owed to ``client``, distinct ones of them it kept)."""
        regions = {group.split("/", 1)[1] for group in client.groups}
        valid = self.publisher.valid
        owed = sum(self.publisher.per_region[region] for region in regions)
        return owed, sum(1 for job in client.accepted if valid.get(job) in regions)

    def _progress(self) -> tuple[int, int]:
        owed = kept = 0
        for client in self.clients:
            client_owed, client_kept = self._tally(client)
            owed += client_owed
            kept += client_kept
        return owed, kept

    async def _settle(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            owed, kept = self._progress()
            if kept >= owed:
                return True
            await asyncio.sleep(1.0)
        return False

    def _check(self, caught_up: bool) -> bool:
        missing = duplicated = repeats_skipped = 0
        per_kind: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        unexpected = 0
        for client in self.clients:
            owed, kept = self._tally(client)
            lacking = owed - kept
            twice = sum(count - 1 for count in client.accepted.values() if count > 1)
            skipped = sum(client.received.values()) - sum(client.accepted.values())
            unexpected += len(client.accepted) - kept
            missing += lacking
            duplicated += twice
            repeats_skipped += skipped
            stats = per_kind[client.kind]
            stats["clients"] += 1
            stats["owed"] += owed
            stats["missing"] += lacking
            stats["duplicated"] += twice
            stats["skipped"] += skipped
            stats["connects"] += client.stats.connects
            for outcome, count in client.stats.resumes.items():
                stats[f"resume:{outcome}"] += count
        dead = self.dead_letters
        invalid = set(self.publisher.invalid)
        published_valid = len(self.publisher.valid)
        dead_ok = invalid <= set(dead)
        ok = caught_up and missing == 0 and duplicated == 0 and unexpected == 0 and dead_ok
        self.summary = {
            "published": published_valid + len(invalid),
            "published_valid": published_valid,
            "published_invalid": len(invalid),
            "publish_retries": self.publisher.retries,
            "publish_returned": self.publisher.returned,
            "deliveries_owed": sum(s["owed"] for s in per_kind.values()),
            "missing": missing,
            "duplicated": duplicated,
            "repeats_skipped_by_position": repeats_skipped,
            "unexpected": unexpected,
            "dead_lettered_distinct": len(invalid & set(dead)),
            "dead_letter_copies": sum(dead.values()),
            "caught_up": caught_up,
            "per_transport": {kind: dict(stats) for kind, stats in per_kind.items()},
            "faults": dict(self.faults),
            "ok": ok,
        }
        say("")
        say(
            f"soak: count check {'PASSED' if ok else 'FAILED'}: "
            f"published {published_valid} valid + {len(invalid)} invalid "
            f"(publisher retries {self.publisher.retries}, of which {self.publisher.returned} returned "
            f"unroutable); faults {dict(self.faults)}"
        )
        say(
            f"soak: deliveries owed {self.summary['deliveries_owed']}: "
            f"missing {missing}, duplicated {duplicated} "
            f"(repeats skipped by position: {repeats_skipped}), unexpected {unexpected}"
        )
        say(
            f"soak: dead-lettered {self.summary['dead_lettered_distinct']} of {len(invalid)} invalid "
            f"({self.summary['dead_letter_copies']} copies: one per instance that read it live)"
        )
        for kind, stats in per_kind.items():
            say(f"soak:   {kind:<12} {dict(stats)}")
        return ok

    async def _explain_missing(self, limit: int = 40) -> None:
        """Each missing delivery: where the event is in the stream, and what its client went through."""
        offsets = await self._stream_offsets()
        missing: list[dict[str, Any]] = []
        for client in self.clients:
            regions = {group.split("/", 1)[1] for group in client.groups}
            for job, region in self.publisher.valid.items():
                if region in regions and job not in client.accepted:
                    at = self.publisher.confirmed_at.get(job, 0.0)
                    kept = sorted(client.kept_at.values())
                    offset = offsets.get(job)
                    before = max((o for o in kept if offset is not None and o < offset), default=None)
                    after = min((o for o in kept if offset is not None and o > offset), default=None)
                    story = [
                        f"{when - self.started:+.1f} s {what}"
                        for when, what in client.history
                        if at - 30 <= when <= at + 30
                    ]
                    missing.append(
                        {
                            "client": client.name,
                            "job": job,
                            "region": region,
                            "confirmed_t": round(at - self.started, 1),
                            "offset": offset,
                            "kept_before": before,
                            "kept_after": after,
                            "client_story": story,
                        }
                    )
        self.missing = missing
        say(f"soak: {len(missing)} missing deliveries; the first {min(limit, len(missing))}:")
        for item in missing[:limit]:
            say(
                f"soak:   {item['client']} job {item['job'][:8]} region {item['region']} confirmed at "
                f"{item['confirmed_t']} s, stream offset {item['offset']} (kept {item['kept_before']} .. "
                f"{item['kept_after']})"
            )
            for line in item["client_story"]:
                say(f"soak:       {line}")

    async def _stream_offsets(self) -> dict[str, int]:
        """jobId -> offset of every event the stream holds."""
        found: dict[str, int] = {}
        connection = await aio_pika.connect(self.broker.url, timeout=10)
        try:
            channel = await connection.channel()
            await channel.set_qos(prefetch_count=1000)
            stream = await channel.declare_queue(f"{self.prefix}.events", passive=True)
            done = asyncio.Event()
            total = len(self.publisher.valid)

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                offset = (message.headers or {}).get("x-stream-offset")
                with contextlib.suppress(orjson.JSONDecodeError, TypeError, KeyError):
                    body = orjson.loads(message.body)
                    if isinstance(body, dict) and "jobId" in body and isinstance(offset, int):
                        found[str(body["jobId"])] = offset
                await message.ack()
                if len(found) >= total:
                    done.set()

            tag = await stream.consume(on_message, arguments={"x-stream-offset": "first"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 30.0)
            await stream.cancel(tag)
        finally:
            await connection.close()
        return found

    async def collect_dead_letters(self) -> None:
        found: Counter[str] = Counter()
        connection = await aio_pika.connect(self.broker.url, timeout=10)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(f"{self.prefix}.dlq", passive=True)
            while (message := await queue.get(no_ack=True, fail=False, timeout=5)) is not None:
                found[str(message.message_id)] += 1
        finally:
            await connection.close()
        self.dead_letters = found

    async def teardown(self) -> None:
        for instance in self.instances:
            if instance.child is not None and instance.child.alive():
                await instance.terminate()
        if self.broker.running:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._delete_everything)
        await asyncio.to_thread(self.broker.teardown)

    def _delete_everything(self) -> None:
        """Every queue, stream and exchange of this run (the node is deleted afterwards anyway)."""
        queues = self.broker.rabbitmqctl("list_queues", "-q", "--no-table-headers", "name").split()
        exchanges = self.broker.rabbitmqctl("list_exchanges", "-q", "--no-table-headers", "name").split()

        async def delete() -> None:
            connection = await aio_pika.connect(self.broker.url, timeout=10)
            try:
                channel = await connection.channel()
                for name in queues:
                    if name.startswith(self.prefix):
                        await channel.queue_delete(name)
                for name in exchanges:
                    if name.startswith(self.prefix):
                        await channel.exchange_delete(name)
            finally:
                await connection.close()

        asyncio.run(delete())


async def main_async(options: Options) -> int:
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        soak = Soak(options, Path(tmp))
        say(
            f"# Soak: {options.duration:.0f} s, {options.clients} clients x {len(KINDS)} transports, "
            f"{options.rate}/s, a fault every {options.fault_interval:.0f} s "
            f"({datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')})"
        )
        ok = False
        try:
            await soak.setup()
            ok = await soak.run()
        finally:
            with contextlib.suppress(Exception):
                _write(options, soak)
            await soak.teardown()
            kill_all()
        return 0 if ok else 1


def _write(options: Options, soak: Soak) -> None:
    options.output.mkdir(parents=True, exist_ok=True)
    result = {
        "date": datetime.now(UTC).isoformat(),
        "options": {key: str(value) for key, value in vars(options).items()},
        "rows": soak.rows,
        "faults": soak.fault_log,
        "summary": soak.summary,
        "missing": soak.missing,
    }
    (options.output / f"soak-{options.label}.json").write_bytes(
        orjson.dumps(result, option=orjson.OPT_INDENT_2)
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # The publisher's reconnects during broker restarts are expected: aio-pika's and aiormq's
    # warnings about them would bury the figures.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return asyncio.run(main_async(options))
    except KeyboardInterrupt:
        kill_all()
        return 130


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
