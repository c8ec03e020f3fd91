"""The hub as a ``ConnectionApplication``: a connection's whole life, from attach to close.

ASP.NET's ``HubConnectionHandler.OnConnectedAsync`` in Python: a transport attaches → a
``HubConnection`` waits for its handshake; bytes arrive → it decodes and dispatches; the transport
drops → a stateful connection waits for its resume, any other is closed; close → it leaves every
group. One heartbeat (``tick``) drives every timer of every connection, instead of a timer each.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from config.settings import Settings
from service.auth import GroupPolicy
from service.connections import ConnectionManager, HttpConnection, Outgoing
from service.protocol import PING, HubProtocol

from .connection import HubConnection
from .dispatcher import HubDispatcher, HubMethods
from .lifetime import HubLifetimeManager

__all__ = ["HubConnectionHandler", "HubOptions"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class HubOptions:
    keep_alive: float = 15.0
    client_timeout: float = 30.0
    handshake_timeout: float = 15.0
    max_message_size: int | None = 32_768
    replay_buffer_size: int = 100_000
    close_on_authentication_expiration: bool = True
    detailed_errors: bool = False

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
        )


class HubConnectionHandler:
    """Runs the hub on every connection the ``ConnectionManager`` hands it."""

    def __init__(
        self,
        methods: HubMethods,
        *,
        options: HubOptions,
        policy: GroupPolicy,
        lifetime: HubLifetimeManager | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.options = options
        self.policy = policy
        self.lifetime = lifetime or HubLifetimeManager()
        self.dispatcher = HubDispatcher(methods, detailed_errors=options.detailed_errors)
        self._clock = clock
        self._wall_clock = wall_clock
        self.now = clock()
        self._connections: dict[str, HubConnection] = {}
        self._close_reasons: dict[str, str] = {}
        self._pings: dict[str, Outgoing] = {}
        self._manager: ConnectionManager | None = None

    def bind(self, manager: ConnectionManager) -> None:
        self._manager = manager

    def dispose(self, connection: HttpConnection) -> None:
        assert self._manager is not None, "HubConnectionHandler.bind() was not called"
        self._manager.dispose(connection)

    def ping_for(self, protocol: HubProtocol) -> Outgoing:
        ping = self._pings.get(protocol.name)
        if ping is None:
            ping = self._pings[protocol.name] = Outgoing(protocol.write(PING))
        return ping

    def __len__(self) -> int:
        return len(self._connections)

    # --- ConnectionApplication ------------------------------------------------------------------

    def on_transport_attached(self, connection: HttpConnection, *, resumed: bool) -> None:
        hub_connection = self._connections.get(connection.connection_id)
        if hub_connection is None:
            self._connections[connection.connection_id] = HubConnection(connection, self)
        elif resumed:
            hub_connection.resume()

    async def on_data(self, connection: HttpConnection, data: bytes) -> None:
        hub_connection = self._connections.get(connection.connection_id)
        if hub_connection is not None:
            await hub_connection.receive(data)

    def on_transport_lost(self, connection: HttpConnection) -> None:
        log.info("connection.transport_lost", waitingForResume=True)

    def on_closed(self, connection: HttpConnection) -> None:
        hub_connection = self._connections.pop(connection.connection_id, None)
        if hub_connection is None:
            return
        self.lifetime.remove_connection(hub_connection)
        hub_connection.on_closed(self._close_reasons.pop(connection.connection_id, "transport_closed"))

    # --- called by HubConnection ----------------------------------------------------------------

    def on_handshake_completed(self, hub_connection: HubConnection) -> None:
        self.lifetime.add_connection(hub_connection)

    def record_close_reason(self, hub_connection: HubConnection, reason: str) -> None:
        self._close_reasons[hub_connection.connection_id] = reason

    # --- heartbeat ------------------------------------------------------------------------------

    def tick(self) -> None:
        """Advance every connection's timers; called about once a second."""
        self.now = now = self._clock()
        wall_clock = self._wall_clock()
        for hub_connection in list(self._connections.values()):
            hub_connection.tick(now, wall_clock)

    def close_all(self, *, allow_reconnect: bool, reason: str) -> None:
        """Graceful shutdown: tell every client to go (and whether to come back)."""
        for hub_connection in list(self._connections.values()):
            if hub_connection.protocol is None:
                hub_connection.abort(reason)
            else:
                hub_connection.close(allow_reconnect=allow_reconnect, reason=reason)
