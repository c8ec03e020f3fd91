"""The hub side of the shared log: history, delivery with positions, checkpoints, and resuming.

The consumer hands every entry of the stream to ``EventJournal`` (it is the consumer's
``EventLog``): ``record`` keeps it in the ``History``, ``deliver`` sends an event to its groups —
with its position as one extra argument for connections that asked for positions. ``resume`` is
what the ``Resume`` hub method does: join a set of groups and replay what the caller missed since
its position, merged across those groups in log order.

Rule: a resume replays and joins in one synchronous step (no ``await`` between the first replayed
send and the last join). Deliveries run in the consumer's task, so none can slip between the
replay and the join: nothing is missed, nothing older arrives after something newer, and nothing
twice. The only ``await`` comes before, while this instance catches up to the caller's position.

While a starting instance loads its history (the consumer records entries up to where it left off
without delivering them), a resume waits for that to finish (``RESUME_WAIT_SECONDS`` at most): one
that joined halfway would never be sent the rest of what it is owed, since loaded entries are not
delivered. Still loading after the wait: nothing is replayed and the answer is ``ahead``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Set
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from schemas.log import LogRecord, Position
from service.metrics import HISTORY_BYTES, HISTORY_ENTRIES, REPLAYED_EVENTS, RESUMES

from .history import History, ReplayMiss
from .lifetime import HubLifetimeManager

__all__ = ["CHECKPOINT_TARGET", "EventJournal", "HistoryLoader", "ResumeResult"]

log = structlog.get_logger(__name__)

CHECKPOINT_TARGET: Final = "Checkpoint"
"""Client method of checkpoints: ``Checkpoint(position)``, sent only to connections with positions."""


@dataclass(frozen=True, slots=True)
class ResumeResult:
    recovered: bool
    position: str | None
    replayed: int
    reason: str | None  # why not recovered: fresh, empty, window, epoch, ahead, cap

    def as_reply(self) -> dict[str, Any]:
        return {
            "recovered": self.recovered,
            "position": self.position,
            "replayed": self.replayed,
            "reason": self.reason,
        }


class HistoryLoader(Protocol):
    """Who fills the history at start (the consumer): whether it is done, and a way to wait for it."""

    @property
    def is_caught_up(self) -> bool: ...

    async def wait_caught_up(self) -> None: ...


class EventJournal:
    def __init__(
        self,
        lifetime: HubLifetimeManager,
        history: History,
        *,
        replay_cap: int,
        resume_wait_seconds: float,
        close_positioned: Callable[[str], None],
    ) -> None:
        self._lifetime = lifetime
        self.history = history
        self._replay_cap = replay_cap
        self._resume_wait = resume_wait_seconds
        self._close_positioned = close_positioned
        self._checkpointed: Position | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self.loader: HistoryLoader | None = None
        """Set when a consumer fills the history (none: the hub alone, always loaded)."""

    @property
    def head(self) -> Position | None:
        head = self.history.head
        return None if head is None else head.position

    # --- the consumer's side (consumers.ports.EventLog) ----------------------------------------

    def record(self, record: LogRecord) -> None:
        self.history.append(record)
        if self._waiters:
            self._wake(record.offset)

    def deliver(self, record: LogRecord) -> int:
        if record.target is None or record.payload is None:
            return 0
        return self._lifetime.send_groups(
            record.groups, record.target, record.payload, position=str(record.position)
        )

    def reset(self, reason: str) -> None:
        log.warning("log.reset", reason=reason, forgotten=len(self.history))
        self.history.clear()
        self._checkpointed = None
        self._wake(None)
        self._close_positioned(reason)

    # --- checkpoints ---------------------------------------------------------------------------

    def checkpoint(self, *, force: bool = False) -> int:
        """Tell connections with positions how far the log has gone (they may have had no event for a
        while: offsets are global, groups are sparse). Only when it moved, unless ``force``."""
        self.history.expire()
        HISTORY_ENTRIES.set(len(self.history))
        HISTORY_BYTES.set(self.history.size_bytes)
        head = self.head
        if head is None or (head == self._checkpointed and not force):
            return 0
        self._checkpointed = head
        return self._lifetime.send_positioned(CHECKPOINT_TARGET, str(head))

    # --- resuming ------------------------------------------------------------------------------

    async def resume(self, connection_id: str, groups: Set[str], position: Position | None) -> ResumeResult:
        """Join ``groups`` and replay what ``connection_id`` missed since ``position`` (see module doc)."""
        loaded = True
        if position is not None:
            # One bound for both waits (RESUME_WAIT_SECONDS), not one each.
            deadline = asyncio.get_running_loop().time() + self._resume_wait
            loaded = await self._wait_loaded(deadline)
            if loaded:
                await self._catch_up(position.offset, deadline)
        # From here to the return: no await.
        head = self.history.head
        reason: str | None = None
        replay: list[Any] = []
        if position is None:
            reason = "fresh"
        elif not loaded:
            reason = "ahead"
        elif head is None:
            reason = "empty"
        else:
            result = self.history.replay(position, through=head.offset, groups=groups, cap=self._replay_cap)
            if isinstance(result, ReplayMiss):
                reason = result.reason.value
            else:
                replay = result
        lifetime = self._lifetime
        if replay:
            lifetime.send_connection_many(
                connection_id,
                [(entry.target or "", (entry.load_payload(), str(entry.position))) for entry in replay],
            )
        for group in sorted(groups):
            lifetime.add_to_group(connection_id, group)
        outcome = reason or "recovered"
        RESUMES.labels(outcome).inc()
        REPLAYED_EVENTS.inc(len(replay))
        log.info(
            "connection.resumed_from_log",
            connectionId=connection_id,
            outcome=outcome,
            replayed=len(replay),
            asked=str(position) if position else None,
            head=str(head.position) if head else None,
        )
        return ResumeResult(
            recovered=reason is None,
            position=None if head is None else str(head.position),
            replayed=len(replay),
            reason=reason,
        )

    async def _wait_loaded(self, deadline: float) -> bool:
        """Whether the history is loaded, after waiting (until ``deadline``) for it if it is loading."""
        loader = self.loader
        if loader is None or loader.is_caught_up:
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loader.wait_caught_up(), _left(deadline))
        return loader.is_caught_up

    async def _catch_up(self, offset: int, deadline: float) -> None:
        """Wait (until ``deadline``) until this instance has read up to ``offset``: the caller may come
        from an instance that is a little ahead, or this one may still be loading its history."""
        head = self.history.head
        if (head is not None and head.offset >= offset) or _left(deadline) <= 0:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (offset, future)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(future, _left(deadline))
        except TimeoutError:
            pass
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _wake(self, offset: int | None) -> None:
        """Resolve waiters up to ``offset`` (all of them on ``None``: the log was reset)."""
        still: list[tuple[int, asyncio.Future[None]]] = []
        for wanted, future in self._waiters:
            if offset is None or wanted <= offset:
                if not future.done():
                    future.set_result(None)
            else:
                still.append((wanted, future))
        self._waiters = still


def _left(deadline: float) -> float:
    return max(0.0, deadline - asyncio.get_running_loop().time())
