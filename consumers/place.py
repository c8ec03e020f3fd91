"""Where this instance is in the shared log — pure bookkeeping, no I/O, tested on its own.

Two questions decide every entry's fate, and both are answered here from offsets and checks alone:

- ``LogPlace``: where to attach (the last entry read, after any loss; the history window at start),
  whether an entry was read already, and what the first entry after an attach says: the same log,
  a gap (what we read last is gone: retention removed it while the link was down), or a recreated
  stream (the entry at our offset is another one).
- ``Catchup``: while a starting instance fills its history, which entry is the first to deliver —
  the one after the position it saved before a restart, or (a new instance) the marker it wrote
  into the log when it started.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Final

from schemas.log import Position

from .positions import SavedPosition

__all__ = ["GAP_TOLERANCE", "Attachment", "Catchup", "LogPlace", "Step", "Verdict"]

GAP_TOLERANCE: Final = 16
"""A stream skips one offset at each new segment: attached after a saved position (a long restart),
a larger jump than this to the first entry means the stretch after it was removed meanwhile."""


class Verdict(Enum):
    SAME = "same"  # the log we were reading
    GAP = "gap"  # entries we never read are gone
    RECREATED = "recreated"  # another stream under the same name: read it from its start


class Step(Enum):
    HISTORY = "history"  # record it; deliver nothing yet
    BACKLOG = "backlog"  # caught up: the first entry published after the saved position
    LIVE = "live"  # caught up at our marker (nothing was missed): deliver from here on


@dataclass(slots=True)
class Attachment:
    start: int | None  # the exact offset asked for, when it is a number
    since: float  # loop time of the attach
    verify: Position | None = None  # re-attached at this entry, read before: it must come back as is
    tag: str | None = None  # known once basic.consume returned (deliveries may come before that)
    seen: bool = False


class LogPlace:
    def __init__(self) -> None:
        self.last: Position | None = None  # the last entry read
        self.from_first = False  # the stream was recreated: read the new one from its first entry
        self.attachment: Attachment | None = None

    def attach_offset(
        self, saved: SavedPosition | None, *, now: float, window_seconds: float
    ) -> int | str | datetime:
        """Where the next consumer starts."""
        if self.last is not None:
            # After any loss: at the last entry read, which must come back unchanged. Asking for the
            # next one could not tell a stream recreated and grown past that offset from the same one.
            return self.last.offset
        if self.from_first:
            return "first"
        if saved is not None and saved.saved_at < now - window_seconds:
            # Away longer than the history window: everything since the saved position is backlog.
            return saved.position.offset + 1
        return datetime.fromtimestamp(now - window_seconds, UTC)

    def attach(self, offset: int | str | datetime, since: float) -> Attachment:
        numeric = offset if isinstance(offset, int) else None
        verify = self.last if numeric is not None and self.last is not None else None
        self.attachment = Attachment(numeric, since, verify=verify)
        return self.attachment

    def owns(self, consumer_tag: str | None) -> bool:
        """Whether a delivery comes from the current consumer (not one given up on)."""
        attachment = self.attachment
        return attachment is not None and (attachment.tag is None or consumer_tag == attachment.tag)

    def first(self, offset: int, check: str) -> Verdict | None:
        """The verdict on the first entry of the current attachment; None for every later one."""
        attachment = self.attachment
        if attachment is None or attachment.seen:
            return None
        attachment.seen = True
        verify = attachment.verify
        if verify is not None:
            if offset == verify.offset and check != verify.check:
                return Verdict.RECREATED
            if offset > verify.offset:
                return Verdict.GAP
        elif attachment.start is not None and offset > attachment.start + GAP_TOLERANCE:
            return Verdict.GAP
        return Verdict.SAME

    def already_read(self, offset: int) -> bool:
        return self.last is not None and offset <= self.last.offset

    def read(self, offset: int, check: str) -> None:
        self.last = Position(offset, check)

    def start_afresh(self) -> None:
        """The stream was recreated: forget where we were; the next consumer reads it from the start."""
        self.last = None
        self.from_first = True
        self.attachment = None


class Catchup:
    """The prefill of a starting instance: record, don't deliver, until the first entry to deliver."""

    def __init__(self, saved: SavedPosition | None = None) -> None:
        self.saved = saved
        self.marker: str | None = None  # the token of the marker this instance wrote last
        self.done = False

    def observe(self, offset: int, check: str, marker: str | None) -> Step:
        """What ``(offset, check)`` — carrying ``marker`` if it is one — is for a starting instance."""
        if self.done:
            return Step.LIVE
        saved = self.saved
        if saved is not None:
            if offset == saved.position.offset and check != saved.position.check:
                self.saved = saved = None  # a position of a stream that no longer exists
            elif offset > saved.position.offset:
                self.done = True
                return Step.BACKLOG
        if marker is not None and marker == self.marker:
            # Our own marker: everything before it predates us (or, with a saved position still
            # ahead of it, the stream ends before where we were: it was recreated while we were down).
            self.saved = None
            self.done = True
            return Step.LIVE
        return Step.HISTORY
