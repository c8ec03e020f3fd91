"""The hub's settings (ASP.NET's ``HubOptions``, defaults as ``HubOptionsSetup.cs``) and its clock.

Rule: read once from ``Settings`` at start; every connection shares one ``HubOptions`` and one
``HubClock``, so a connection holds a pointer to them, never a copy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from config.settings import Settings

__all__ = ["HubClock", "HubOptions"]


@dataclass(frozen=True, slots=True)
class HubOptions:
    keep_alive: float = 15.0
    client_timeout: float = 30.0
    handshake_timeout: float = 15.0
    max_message_size: int | None = 32_768
    replay_buffer_size: int = 100_000
    close_on_authentication_expiration: bool = True
    detailed_errors: bool = False
    messages_per_turn: int = 8
    max_invocations_per_second: float = 20.0  # 0: no limit
    invocation_burst: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> HubOptions:
        return cls(
            keep_alive=settings.hub_keep_alive_interval,
            client_timeout=settings.hub_client_timeout_interval,
            handshake_timeout=settings.hub_handshake_timeout,
            max_message_size=settings.hub_max_receive_message_size,
            replay_buffer_size=settings.hub_stateful_reconnect_buffer_size,
            close_on_authentication_expiration=settings.hub_close_on_authentication_expiration,
            detailed_errors=settings.hub_detailed_errors,
            messages_per_turn=settings.hub_messages_per_turn,
            max_invocations_per_second=settings.hub_max_invocations_per_second,
            invocation_burst=settings.hub_invocation_burst,
        )


class HubClock:
    """The time as of the last heartbeat tick, read by every connection without a system call.

    Timers here have one-second granularity (the heartbeat's), so a value refreshed once a tick is
    as good as reading the clock per message, and much cheaper on the receive path.
    """

    __slots__ = ("_monotonic", "_wall", "now", "wall")

    def __init__(
        self, monotonic: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time
    ) -> None:
        self._monotonic = monotonic
        self._wall = wall
        self.now = monotonic()
        self.wall = wall()

    def tick(self) -> None:
        self.now = self._monotonic()
        self.wall = self._wall()
