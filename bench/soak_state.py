"""What every part of the soak shares: its ``Options``, ``say``, and ``SoakState`` — the broker, the
instances, the clients, the publisher, the tallies — with where the count stands (``_progress``).

The base of the soak's parts (``bench.soak_faults``, ``bench.soak_report``, ``bench.soak_check``)
and of ``bench.soak.Soak``, which strings them together; it imports none of them.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.soak_clients import SoakClient
from bench.soak_instances import Instance
from bench.soak_publisher import Publisher
from devkit.local_broker import PrivateBroker


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


def say(text: str) -> None:
    print(text, flush=True)


class SoakState:
    """The soak's run state, set up by ``bench.soak.Soak`` and read by each of its parts."""

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
