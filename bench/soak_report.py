"""The soak's figure lines: every ``--report-interval`` seconds, per instance, RSS, RSS per
connection, open files, tasks and connections, the stream's and dead-letter queue's depth, and the
count so far; each line also kept as a row of the result file.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from bench.soak_instances import scrape
from bench.soak_state import SoakState, say


class SoakReport(SoakState):
    """The figure lines of ``bench.soak.Soak``."""

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
