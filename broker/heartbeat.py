"""Noticing a silent broker link within two heartbeats, where the AMQP client library takes over three.

With a heartbeat of H seconds both peers send a heartbeat frame when they have sent nothing else for
about H / 2 seconds, and a peer that hears nothing for two heartbeat intervals considers the link dead
(AMQP 0-9-1 §4.2.7: "If a peer detects no incoming traffic (i.e. received octets) for two heartbeat
intervals or longer, it should close the connection"; https://www.rabbitmq.com/docs/heartbeats:
"After two missed heartbeats, the peer is considered to be unreachable"). aiormq closes the link only after
``(H + 1) × 3`` seconds of silence (its ``HEARTBEAT_GRACE_MULTIPLIER``), and checks that every
H / 2 seconds: ~18–20 s at H = 5, about a minute at the default 20 s. A link whose peer stops
answering without closing — a proxy or a NAT that swallows bytes, a host that vanished — kept
``/readyz`` at 200 for all that time.

``SilenceWatch`` reads when the last frame (of any kind: heartbeat, delivery, method) arrived and
says how long the link may stay silent before it is declared dead: ``2 × H`` after that frame.
``consumers.link.BrokerLink`` runs it and closes the connection when it trips, so aio-pika's robust
reconnect starts and the consumer re-attaches as after any other loss.

Where the time comes from. aiormq records the loop time of every frame its reader receives, in a
private attribute (``Connection.__last_frame_time``) that only its own stuck check reads; nothing
public carries it. ``last_frame_at`` reads that attribute and nothing else of aiormq's insides, and
returns ``None`` if a future aiormq drops it — then the watch stays idle, aiormq's slower check
still closes the link, and a test (``tests/consumers/test_heartbeat.py``) fails so the upgrade is
noticed. The negotiated heartbeat is public (``connection_tune.heartbeat``).

Rule: a heartbeat of 0 (disabled) disables the watch; a link that receives frames never trips it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import aiormq.abc
import aiormq.exceptions

__all__ = [
    "SILENT_HEARTBEATS",
    "BrokerSilentError",
    "SilenceWatch",
    "last_frame_at",
    "negotiated_heartbeat",
    "silence_bound",
]

SILENT_HEARTBEATS: Final = 2
"""Heartbeat intervals without a single frame from the broker after which the link is dead."""

_LAST_FRAME_ATTRIBUTE: Final = "_Connection__last_frame_time"  # aiormq.connection.Connection


class BrokerSilentError(aiormq.exceptions.AMQPConnectionError):
    """Nothing arrived from the broker for two heartbeat intervals: the link is closed from our side."""


def silence_bound(heartbeat_seconds: int) -> float | None:
    """How long the link may stay silent; None when heartbeats are disabled (0)."""
    return float(SILENT_HEARTBEATS * heartbeat_seconds) if heartbeat_seconds > 0 else None


def negotiated_heartbeat(connection: aiormq.abc.AbstractConnection) -> int:
    """The heartbeat the link runs with (aiormq sends ours in Connection.TuneOk); 0 when unknown."""
    tune = getattr(connection, "connection_tune", None)  # set once the connection is open
    heartbeat = getattr(tune, "heartbeat", 0)
    return heartbeat if isinstance(heartbeat, int) else 0


def last_frame_at(connection: aiormq.abc.AbstractConnection) -> float | None:
    """Loop time at which aiormq's reader last received a frame; None if this aiormq does not say."""
    value = getattr(connection, _LAST_FRAME_ATTRIBUTE, None)
    return value if isinstance(value, float) else None


@dataclass(frozen=True, slots=True)
class SilenceWatch:
    """The verdict on one open connection at one moment: pure, so it is tested without a broker."""

    heartbeat_seconds: int
    last_frame: float | None

    @classmethod
    def of(cls, connection: aiormq.abc.AbstractConnection) -> SilenceWatch:
        return cls(negotiated_heartbeat(connection), last_frame_at(connection))

    @property
    def active(self) -> bool:
        """Whether this connection is watched (heartbeats on, and the frame time readable)."""
        return self.heartbeat_seconds > 0 and self.last_frame is not None

    def silent_for(self, now: float) -> float:
        return 0.0 if self.last_frame is None else max(0.0, now - self.last_frame)

    def remaining(self, now: float) -> float | None:
        """Seconds left before the link counts as dead (<= 0: it is); None when not watched."""
        bound = silence_bound(self.heartbeat_seconds)
        if bound is None or self.last_frame is None:
            return None
        return self.last_frame + bound - now
