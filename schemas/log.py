"""The shared event log's vocabulary: positions, and the record the consumer hands the hub.

Every instance consumes the same RabbitMQ stream, so an event has the same offset everywhere. A
``Position`` is that offset plus a short check of the log entry there (a hash of what was
published), written ``"<offset>:<check>"``. The check is what tells a position of this stream from
one of a stream that was deleted and recreated (its offsets start again at 0, so the same number
then names another entry): a position whose check does not match the entry at its offset belongs to
another epoch of the log.

Rule: positions are opaque strings to clients except for one thing they may rely on — two
positions of one epoch are ordered by their offset (the number before the colon). Strings, not
numbers, so that no client loses precision (JavaScript numbers stop being exact at 2**53).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Final

__all__ = ["InvalidPositionError", "LogRecord", "Position", "entry_check"]

_CHECK_BYTES: Final = 4
_POSITION_RE: Final = re.compile(r"(0|[1-9][0-9]{0,18}):([0-9a-f]{8})")
MAX_POSITION_LENGTH: Final = 28


class InvalidPositionError(ValueError):
    """A string that is not a position this service wrote; ``str()`` says what one looks like."""


def entry_check(body: bytes, *, message_id: str | None, exchange: str, routing_key: str) -> str:
    """The check of a log entry: 8 hex digits of a hash of what was published (same on every instance)."""
    digest = hashlib.blake2b(digest_size=_CHECK_BYTES)
    for part in (exchange.encode(), routing_key.encode(), (message_id or "").encode()):
        digest.update(len(part).to_bytes(4, "big"))
        digest.update(part)
    digest.update(body)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Position:
    offset: int
    check: str

    def __str__(self) -> str:
        return f"{self.offset}:{self.check}"

    @classmethod
    def parse(cls, text: str) -> Position:
        match = _POSITION_RE.fullmatch(text) if len(text) <= MAX_POSITION_LENGTH else None
        if match is None:
            raise InvalidPositionError(
                f"Invalid position {text[:MAX_POSITION_LENGTH]!r}: pass a position this service sent "
                "(like '1234:9f86d081'), or null to start without one"
            )
        return cls(int(match.group(1)), match.group(2))


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One entry of the log as the consumer hands it to the hub.

    ``target`` is the client method (the event type) and ``payload`` the client payload, for a
    valid event; both are ``None`` for an entry that is not delivered (invalid, duplicate), which
    still has a position, so that positions stay checkable and checkpoints can move past it.
    ``published_at`` is the publisher's timestamp (epoch seconds) when it set one.
    """

    offset: int
    check: str
    target: str | None = None
    groups: tuple[str, ...] = ()
    payload: dict[str, Any] | None = None
    published_at: float | None = None

    @property
    def position(self) -> Position:
        return Position(self.offset, self.check)
