"""The last stretch of the shared event log, in memory, for replaying what a client missed.

Every record the consumer reads from the stream goes in, valid event or not, so that any position
this service handed out can be checked against the entry at its offset. Bounded three ways — by
entries, by bytes of payload, and by age — whichever bites first drops the oldest entries.

Rule: no I/O and no clock of its own beyond the one it is given; entries are kept in offset order,
and a lookup by offset is O(1) while the log is contiguous (it is: a stream gives every message an
offset, one after the other), with a binary search as the fallback. A replay reads only the
entries of the groups it asks for, from an index of offsets per group: its cost follows what it
returns (at most the replay cap), not the size of the history, so that a client calling ``Resume``
from its oldest position into a quiet group cannot make the process scan 200,000 entries per call.

Entries are kept as plain tuples of ints, strings, bytes and floats, which CPython's cyclic garbage
collector stops tracking after their first collection (only exact tuples of untracked items are
untracked). As objects (``HistoryEntry``) the history added one tracked object per event read — up
to ``HISTORY_MAX_ENTRIES`` of them — to the old generation, which every full collection walks and
whose growth sets the next one off (see ``service.gc_freeze``). A ``HistoryEntry`` is built only
when one is asked for.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Set
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import orjson

from schemas.log import LogRecord, Position

__all__ = ["History", "HistoryEntry", "Miss", "ReplayMiss"]

_ENTRY_OVERHEAD: Final = 120  # bytes an entry costs beyond its payload (object, tuple, list slot)
_GROUP_OVERHEAD: Final = 900  # bytes a group costs in the index (an empty deque is 760, its key, its slot)
_INDEX_SLOT: Final = 8  # bytes per group of an entry in the index (a pointer to its offset)


class Miss(StrEnum):
    """Why a replay cannot be served exactly (the client then reloads its state)."""

    WINDOW = "window"  # the position is older than what is kept
    EPOCH = "epoch"  # the entry at that offset is another one: the stream was recreated
    AHEAD = "ahead"  # the position is beyond what this instance has read
    CAP = "cap"  # more to replay than the replay cap allows


@dataclass(frozen=True, slots=True)
class ReplayMiss:
    reason: Miss


@dataclass(frozen=True, slots=True)
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


# (offset, check, target, groups, payload, at): what History keeps per entry (see the module doc). The
# groups are one string, joined by NUL (never in a group name): a nested tuple is untracked only once
# the collector has visited it before its parent, which a single pass does not guarantee.
_Row = tuple[int, str, str | None, str, bytes | None, float]
_SEP: Final = "\0"
_OFFSET: Final = 0
_CHECK: Final = 1
_TARGET: Final = 2
_GROUPS: Final = 3
_PAYLOAD: Final = 4
_AT: Final = 5


def _groups(row: _Row) -> tuple[str, ...]:
    joined = row[_GROUPS]
    return tuple(joined.split(_SEP)) if joined else ()


def _entry(row: _Row) -> HistoryEntry:
    return HistoryEntry(row[_OFFSET], row[_CHECK], row[_TARGET], _groups(row), row[_PAYLOAD], row[_AT])


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
        self._entries: list[_Row] = []
        self._start = 0  # index of the oldest live entry (the list is compacted now and then)
        self._by_group: dict[str, deque[int]] = {}  # offsets of each group's targeted entries
        self.size_bytes = 0

    def __len__(self) -> int:
        return len(self._entries) - self._start

    @property
    def head(self) -> HistoryEntry | None:
        return _entry(self._entries[-1]) if len(self) else None

    @property
    def oldest(self) -> HistoryEntry | None:
        return _entry(self._entries[self._start]) if len(self) else None

    def append(self, record: LogRecord) -> HistoryEntry:
        """Keep ``record``; its offset must be above the head's (the caller resets on a new epoch)."""
        entries = self._entries
        if len(self) and record.offset <= entries[-1][_OFFSET]:
            raise ValueError(f"offset {record.offset} is not after the head {entries[-1][_OFFSET]}")
        # A copy of exactly its size: orjson (3.13) hands back its output in a 4 KiB block, which
        # kept every entry at ~4 KB of memory instead of ~0.25 (measured by the soak, bench/NOTES.md).
        payload = None if record.payload is None else bytes(memoryview(orjson.dumps(record.payload)))
        now = self._clock()
        at = record.published_at if record.published_at is not None else now
        row: _Row = (
            record.offset,
            str(record.check),
            None if record.target is None else str(record.target),
            _SEP.join(record.groups),
            payload,
            float(min(at, now)),
        )
        entries.append(row)
        size = _ENTRY_OVERHEAD + (len(payload) if payload else 0)
        if record.target is not None:
            by_group = self._by_group
            for group in record.groups:
                offsets = by_group.get(group)
                if offsets is None:
                    by_group[group] = offsets = deque()
                    size += _GROUP_OVERHEAD
                offsets.append(record.offset)
                size += _INDEX_SLOT
        self.size_bytes += size
        self._evict(now)
        return _entry(row)

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
            or entries[start][_AT] < oldest_allowed
        ):
            row = entries[start]
            payload = row[_PAYLOAD]
            self.size_bytes -= _ENTRY_OVERHEAD + (len(payload) if payload else 0)
            if row[_TARGET] is not None and row[_GROUPS]:
                self.size_bytes -= self._unindex(row)
            start += 1
        if start > 4096 and start * 2 > len(entries):
            del entries[:start]
            start = 0
        self._start = start

    def _unindex(self, row: _Row) -> int:
        """Take ``row`` out of the index; returns the bytes that frees."""
        by_group = self._by_group
        freed = 0
        for group in row[_GROUPS].split(_SEP):
            offsets = by_group[group]
            offsets.popleft()  # the oldest of its group: entries leave in offset order
            freed += _INDEX_SLOT
            if not offsets:
                del by_group[group]
                freed += _GROUP_OVERHEAD
        return freed

    def clear(self) -> None:
        self._entries.clear()
        self._start = 0
        self._by_group.clear()
        self.size_bytes = 0

    def _index(self, offset: int) -> int | None:
        if not len(self):
            return None
        entries = self._entries
        guess = self._start + offset - entries[self._start][_OFFSET]
        if self._start <= guess < len(entries) and entries[guess][_OFFSET] == offset:
            return guess
        lo = bisect.bisect_left(entries, offset, lo=self._start, key=lambda e: e[_OFFSET])
        return lo if lo < len(entries) and entries[lo][_OFFSET] == offset else None

    def get(self, offset: int) -> HistoryEntry | None:
        index = self._index(offset)
        return None if index is None else _entry(self._entries[index])

    def matches(self, position: Position) -> bool:
        index = self._index(position.offset)
        return index is not None and self._entries[index][_CHECK] == position.check

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
            return ReplayMiss(Miss.WINDOW if after.offset < self._entries[-1][_OFFSET] else Miss.AHEAD)
        if self._entries[index][_CHECK] != after.check:
            return ReplayMiss(Miss.EPOCH)
        wanted: set[int] = set()
        for group in groups:
            # Newest first, stopping at the position: only what is returned (or one past the cap) is read.
            for offset in reversed(self._by_group.get(group, ())):
                if offset <= after.offset:
                    break
                if offset <= through:
                    wanted.add(offset)
                    if len(wanted) > cap:
                        return ReplayMiss(Miss.CAP)
        found = []
        for offset in sorted(wanted):
            found_index = self._index(offset)
            assert found_index is not None  # the index holds live entries only
            found.append(_entry(self._entries[found_index]))
        return found
