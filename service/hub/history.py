"""The last stretch of the shared event log, in memory, for replaying what a client missed.

Every record the consumer reads from the stream goes in, valid event or not, so that any position
this service handed out can be checked against the entry at its offset. Bounded three ways — by
entries, by bytes of payload, and by age — whichever bites first drops the oldest entries.

Rule: no I/O and no clock of its own beyond the one it is given; entries are kept in offset order,
and a lookup by offset is O(1) while the log is contiguous (it is: a stream gives every message an
offset, one after the other), with a binary search as the fallback.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import orjson

from schemas.log import LogRecord, Position

__all__ = ["History", "HistoryEntry", "Miss", "ReplayMiss"]

_ENTRY_OVERHEAD: Final = 120  # bytes an entry costs beyond its payload (object, tuple, list slot)


class Miss(StrEnum):
    """Why a replay cannot be served exactly (the client then reloads its state)."""

    WINDOW = "window"  # the position is older than what is kept
    EPOCH = "epoch"  # the entry at that offset is another one: the stream was recreated
    AHEAD = "ahead"  # the position is beyond what this instance has read
    CAP = "cap"  # more to replay than the replay cap allows


@dataclass(frozen=True, slots=True)
class ReplayMiss:
    reason: Miss


@dataclass(slots=True)
class HistoryEntry:
    offset: int
    check: str
    target: str | None
    groups: tuple[str, ...]
    payload: bytes | None  # the client payload as JSON, decoded again only when replayed
    at: float

    @property
    def position(self) -> Position:
        return Position(self.offset, self.check)

    def load_payload(self) -> object:
        return None if self.payload is None else orjson.loads(self.payload)


class History:
    def __init__(
        self,
        *,
        max_entries: int,
        max_bytes: int,
        max_age_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1 or max_age_seconds <= 0:
            raise ValueError("history bounds must be positive")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._max_age = max_age_seconds
        self._clock = clock
        self._entries: list[HistoryEntry] = []
        self._start = 0  # index of the oldest live entry (the list is compacted now and then)
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries) - self._start

    @property
    def head(self) -> HistoryEntry | None:
        return self._entries[-1] if len(self) else None

    @property
    def oldest(self) -> HistoryEntry | None:
        return self._entries[self._start] if len(self) else None

    def append(self, record: LogRecord) -> HistoryEntry:
        """Keep ``record``; its offset must be above the head's (the caller resets on a new epoch)."""
        head = self.head
        if head is not None and record.offset <= head.offset:
            raise ValueError(f"offset {record.offset} is not after the head {head.offset}")
        # A copy of exactly its size: orjson (3.13) hands back its output in a 4 KiB block, which
        # kept every entry at ~4 KB of memory instead of ~0.25 (measured by the soak, bench/NOTES.md).
        payload = None if record.payload is None else bytes(memoryview(orjson.dumps(record.payload)))
        now = self._clock()
        at = record.published_at if record.published_at is not None else now
        entry = HistoryEntry(record.offset, record.check, record.target, record.groups, payload, min(at, now))
        self._entries.append(entry)
        self.size_bytes += _ENTRY_OVERHEAD + (len(payload) if payload else 0)
        self._evict(now)
        return entry

    def expire(self) -> None:
        """Drop what has grown too old (also done on every append)."""
        self._evict(self._clock())

    def _evict(self, now: float) -> None:
        oldest_allowed = now - self._max_age
        entries = self._entries
        start = self._start
        end = len(entries) - 1  # the head always stays: it is where checkpoints point
        while start < end and (
            end + 1 - start > self._max_entries
            or self.size_bytes > self._max_bytes
            or entries[start].at < oldest_allowed
        ):
            dropped = entries[start]
            self.size_bytes -= _ENTRY_OVERHEAD + (len(dropped.payload) if dropped.payload else 0)
            start += 1
        if start > 4096 and start * 2 > len(entries):
            del entries[:start]
            start = 0
        self._start = start

    def clear(self) -> None:
        self._entries.clear()
        self._start = 0
        self.size_bytes = 0

    def _index(self, offset: int) -> int | None:
        if not len(self):
            return None
        entries = self._entries
        guess = self._start + offset - entries[self._start].offset
        if self._start <= guess < len(entries) and entries[guess].offset == offset:
            return guess
        lo = bisect.bisect_left(entries, offset, lo=self._start, key=lambda e: e.offset)
        return lo if lo < len(entries) and entries[lo].offset == offset else None

    def get(self, offset: int) -> HistoryEntry | None:
        index = self._index(offset)
        return None if index is None else self._entries[index]

    def matches(self, position: Position) -> bool:
        entry = self.get(position.offset)
        return entry is not None and entry.check == position.check

    def replay(
        self, after: Position, *, through: int, groups: Set[str], cap: int
    ) -> list[HistoryEntry] | ReplayMiss:
        """Events for ``groups`` after ``after`` up to offset ``through``, in log order, or why not."""
        oldest = self.oldest
        if oldest is None or after.offset < oldest.offset:
            return ReplayMiss(Miss.WINDOW)
        if after.offset > through:
            return ReplayMiss(Miss.AHEAD)
        index = self._index(after.offset)
        if index is None:
            return ReplayMiss(Miss.WINDOW if after.offset < self._entries[-1].offset else Miss.AHEAD)
        if self._entries[index].check != after.check:
            return ReplayMiss(Miss.EPOCH)
        found: list[HistoryEntry] = []
        for entry in self._iter_from(index + 1):
            if entry.offset > through:
                break
            if entry.target is not None and not groups.isdisjoint(entry.groups):
                if len(found) >= cap:
                    return ReplayMiss(Miss.CAP)
                found.append(entry)
        return found

    def _iter_from(self, index: int) -> Iterator[HistoryEntry]:
        entries = self._entries
        for position in range(index, len(entries)):
            yield entries[position]
