"""The hub as a ``ConnectionApplication``: a connection's whole life, from attach to close.

ASP.NET's ``HubConnectionHandler.OnConnectedAsync`` in Python: a transport attaches → a
``HubConnection`` waits for its handshake; bytes arrive → it decodes and dispatches; the transport
drops → a stateful connection waits for its resume, any other is closed; close → the lifetime
manager forgets it and its groups. One heartbeat (``tick``) drives every timer of every connection,
instead of a timer each.
"""

from __future__ import annotations

import math

import structlog

from service.connections import HttpConnection

from .connection import HubConnection
from .dispatcher import HubDispatcher, HubMethods
from .lifetime import HubLifetimeManager
from .options import HubClock, HubOptions
from .services import HubServices

__all__ = ["HubConnectionHandler"]

log = structlog.get_logger(__name__)

_MIN_PINGS_PER_STEP = 16


class HubConnectionHandler:
    """Runs the hub's methods on every connection the ``ConnectionManager`` hands it."""

    def __init__(
        self,
        methods: HubMethods,
        *,
        options: HubOptions,
        lifetime: HubLifetimeManager,
        clock: HubClock | None = None,
    ) -> None:
        self.lifetime = lifetime
        self.clock = clock or HubClock()
        self._services = HubServices(
            options=options,
            clock=self.clock,
            lifetime=lifetime,
            dispatcher=HubDispatcher(methods, detailed_errors=options.detailed_errors),
        )
        self._connections: dict[str, HubConnection] = {}
        # The connections of the heartbeat's current round (see ``tick``).
        self._round: list[HubConnection] = []
        self.closed_total = 0  # hub connections closed since start (service.gc_freeze counts churn)

    def __len__(self) -> int:
        return len(self._connections)

    def get(self, connection_id: str) -> HubConnection | None:
        return self._connections.get(connection_id)

    # --- ConnectionApplication ------------------------------------------------------------------

    def on_transport_attached(self, connection: HttpConnection, *, resumed: bool) -> None:
        hub_connection = self._connections.get(connection.connection_id)
        if hub_connection is None:
            self._connections[connection.connection_id] = HubConnection(connection, self._services)
        else:
            hub_connection.next_visit = 0.0  # a new transport (and maybe a fresher token): look again
            if resumed:
                hub_connection.resume()

    def can_resume(self, connection: HttpConnection) -> bool:
        hub_connection = self._connections.get(connection.connection_id)
        return hub_connection is None or hub_connection.can_resume

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
        self.closed_total += 1
        self.lifetime.on_disconnected(hub_connection)
        hub_connection.on_closed()

    # --- heartbeat ------------------------------------------------------------------------------

    def tick(self, part: int = 0, parts: int = 1) -> None:
        """Advance the timers of slice ``part`` of ``parts`` of the connections; a round of ``parts``
        calls (``0 .. parts - 1``, about a second) visits every connection once.

        The round is spread so that no call holds the event loop for all of them: with 10,000
        connections one pass took ~12 ms, a stall every delivery waiting behind it paid.
        Connections that arrive during a round are first visited in the next one.
        """
        clock = self.clock
        clock.tick()
        now, wall_clock = clock.now, clock.wall
        if part == 0:
            self._round = list(self._connections.values())
        members = self._round
        count = len(members)
        # Twice the Pings a step writes on average when every connection is idle, so that a cluster
        # of due Pings is written over a few rounds instead of in one step (see PingBudget).
        self._services.ping_budget.left = max(
            _MIN_PINGS_PER_STEP, math.ceil(2 * count / (self._services.options.keep_alive * parts))
        )
        for hub_connection in members[part * count // parts : (part + 1) * count // parts]:
            if hub_connection.next_visit <= now:  # most connections have nothing due (see HubConnection.tick)
                hub_connection.tick(now, wall_clock)
        if part >= parts - 1:
            self._round = []

    def close_positioned(self, reason: str) -> None:
        """Close (reconnect allowed) every connection that tracks positions, so that it resumes."""
        for hub_connection in list(self._connections.values()):
            if hub_connection.positions and hub_connection.protocol is not None:
                hub_connection.close(allow_reconnect=True, reason=f"log_{reason}")

    def close_all(self, *, allow_reconnect: bool, reason: str) -> None:
        """Graceful shutdown: tell every client to go (and whether to come back)."""
        for hub_connection in list(self._connections.values()):
            if hub_connection.protocol is None:
                hub_connection.abort(reason)
            else:
                hub_connection.close(allow_reconnect=allow_reconnect, reason=reason)
