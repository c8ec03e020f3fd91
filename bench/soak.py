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

This module sets the soak up, runs it and tears it down; its parts are ``bench.soak_instances``,
``bench.soak_publisher``, ``bench.soak_faults``, ``bench.soak_report`` (the figure lines),
``bench.soak_check`` (the count) and ``bench.soak_state`` (what they share).
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
from datetime import UTC, datetime
from pathlib import Path

import aio_pika
import aiohttp
import orjson

from bench.procs import kill_all
from bench.service import mint_tokens, service_env
from bench.soak_check import SoakCheck
from bench.soak_clients import KINDS, SoakClient
from bench.soak_faults import SoakFaults
from bench.soak_instances import Instance, scrape
from bench.soak_report import SoakReport
from bench.soak_state import Options, say
from devkit.local_broker import free_port

RESULTS = Path(__file__).resolve().parent / "results"


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


# --- the run ---------------------------------------------------------------------------------------


class Soak(SoakFaults, SoakReport, SoakCheck):
    """Setup, the run (publisher, faults, figure lines, then the check), teardown."""

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
