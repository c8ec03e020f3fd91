"""The soak's count check at the end: every valid event reached every client of its groups exactly
once and every invalid one is dead-lettered; when not, each missing delivery with its stream offset
and what its client went through.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any

import aio_pika
import orjson

from bench.soak_clients import KINDS
from bench.soak_state import SoakState, say


class SoakCheck(SoakState):
    """The count check of ``bench.soak.Soak``."""

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
