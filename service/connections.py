"""The HTTP connection layer: connections as negotiate registers them, independent of transport and hub.

A connection is born at ``/negotiate`` (or at a WebSocket upgrade without ``id`` when the client
skips negotiation), carries bytes through whichever transport attaches to it, and dies exactly once
through ``ConnectionManager.dispose``. Transports attach a ``Sink`` (how bytes reach the client);
the hub, as the ``ConnectionApplication``, turns inbound bytes into hub messages. Neither knows the
other: both only know this module.

Rule: writes are synchronous and never wait for a client. A sink either takes the bytes into its
bounded buffer or says it cannot (``False``), and the caller closes that one connection — through
``drop_slow``, the one place where a slow client is counted, logged and dropped, whichever transport
and whichever bound noticed it.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import structlog

from config.settings import Transport
from service.auth import Principal
from service.metrics import SLOW_CLIENT_DISCONNECTS
from service.protocol import TransferFormat, new_connection_id
from service.sink import NO_CAPABILITIES, Capabilities, Outgoing, Sink

__all__ = [
    "NO_CAPABILITIES",
    "Capabilities",
    "ConnectionApplication",
    "ConnectionManager",
    "ConnectionState",
    "HttpConnection",
    "Outgoing",
    "Sink",
]

log = structlog.get_logger(__name__)

_MIN_ASKS_PER_STEP = 16  # sockets a heartbeat step asks at most, unless a quarter of its slice is more


class ConnectionState(enum.Enum):
    NEGOTIATED = "negotiated"  # registered by negotiate; no transport request yet
    ACTIVE = "active"  # a transport is attached
    INACTIVE = "inactive"  # between long polls, or a dropped WebSocket awaiting a stateful resume
    CLOSED = "closed"


class HttpConnection:
    """State of one SignalR connection at the HTTP level."""

    __slots__ = (
        "_manager",
        "capabilities",
        "close_reason",
        "connection_id",
        "connection_token",
        "early_input",
        "inactive_since",
        "negotiate_version",
        "next_scan",
        "positions",
        "principal",
        "resumable",
        "sink",
        "state",
        "stateful_reconnect",
        "transfer_format",
        "transport",
    )

    def __init__(
        self,
        *,
        connection_id: str,
        connection_token: str,
        negotiate_version: int,
        principal: Principal,
        stateful_reconnect: bool,
        now: float,
        manager: ConnectionManager,
        positions: bool = False,
    ) -> None:
        self._manager = manager
        # Asked for each event's position in the log (``?positions=true`` on the hub URL).
        self.positions = positions
        self.connection_id = connection_id
        self.connection_token = connection_token
        self.negotiate_version = negotiate_version
        self.principal = principal
        # Negotiated with useStatefulReconnect=true; the hub makes it ``resumable`` only if the
        # handshake then asks for protocol version 2 (HubProtocol.md, "Stateful Reconnect").
        self.stateful_reconnect = stateful_reconnect
        self.resumable = False
        self.transport: Transport | None = None
        self.capabilities = NO_CAPABILITIES
        self.transfer_format = TransferFormat.TEXT
        # Why it ended, set once by whoever ends it first (``ConnectionManager.dispose``).
        self.close_reason: str | None = None
        self.sink: Sink | None = None
        self.state = ConnectionState.NEGOTIATED
        self.inactive_since = now
        # The heartbeat's scan skips this connection until then (its sink said nothing can stall
        # before; a write that finds bytes waiting sets it back to 0).
        self.next_scan = 0.0
        # Bytes POSTed before any transport request (signalrcore sends its handshake before the first
        # long poll; ASP.NET buffers them in the connection's pipe). Handed over when a transport starts.
        self.early_input: bytearray | None = None

    def write(self, out: Outgoing) -> bool:
        """Hand ``out`` to the attached transport; with none attached there is nobody to write to."""
        sink = self.sink
        return True if sink is None else sink.write(out)

    def abort(self, reason: str) -> None:
        """End this connection for good (ASP.NET's ``ConnectionContext.Abort``); ``reason`` is kept."""
        self._manager.dispose(self, reason)

    def drop_slow(self, cause: str) -> None:
        """The client cannot keep up (``cause``: the bound that noticed): ``ConnectionManager.drop_slow``."""
        self._manager.drop_slow(self, cause)

    def __repr__(self) -> str:
        return f"<HttpConnection {self.connection_id} {self.state.value} {self.transport}>"


class ConnectionApplication(Protocol):
    """What runs on top of a connection (the hub)."""

    def on_transport_attached(self, connection: HttpConnection, *, resumed: bool) -> None: ...

    def can_resume(self, connection: HttpConnection) -> bool:
        """Whether a new transport may take over ``connection`` without it missing anything."""
        ...

    async def on_data(self, connection: HttpConnection, data: bytes) -> None: ...

    def on_transport_lost(self, connection: HttpConnection) -> None: ...

    def on_closed(self, connection: HttpConnection) -> None: ...


class ConnectionManager:
    """Owns every ``HttpConnection``: creation, lookup by token, attach/detach, disposal."""

    def __init__(
        self,
        application: ConnectionApplication,
        *,
        disconnect_timeout: float,
        max_connections: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.application = application
        self._disconnect_timeout = disconnect_timeout
        self._max_connections = max_connections
        self._clock = clock
        self._by_token: dict[str, HttpConnection] = {}
        # Live connections per user (the token's subject), for HUB_MAX_CONNECTIONS_PER_USER.
        self._per_user: dict[str, int] = {}
        # Closed long-polling connections whose last messages (e.g. the Close) await one more poll.
        self._draining: dict[str, tuple[HttpConnection, Sink, float]] = {}
        # The connections of the heartbeat's current round (see ``scan``).
        self._round: list[HttpConnection] = []

    def __len__(self) -> int:
        return len(self._by_token)

    def __iter__(self) -> Iterator[HttpConnection]:
        return iter(list(self._by_token.values()))

    @property
    def at_capacity(self) -> bool:
        return 0 < self._max_connections <= len(self._by_token)

    def connections_of(self, subject: str) -> int:
        """How many live connections the user ``subject`` has (negotiated ones included)."""
        return self._per_user.get(subject, 0)

    def create(
        self,
        *,
        principal: Principal,
        negotiate_version: int,
        stateful_reconnect: bool,
        positions: bool = False,
    ) -> HttpConnection:
        connection_id = new_connection_id()
        # TransportProtocols.md: with negotiateVersion >= 1 the token is a separate secret; with 0 the
        # id doubles as the token.
        token = new_connection_id() if negotiate_version > 0 else connection_id
        connection = HttpConnection(
            connection_id=connection_id,
            connection_token=token,
            negotiate_version=negotiate_version,
            principal=principal,
            stateful_reconnect=stateful_reconnect,
            now=self._clock(),
            manager=self,
            positions=positions,
        )
        self._by_token[token] = connection
        subject = principal.subject
        self._per_user[subject] = self._per_user.get(subject, 0) + 1
        return connection

    def get(self, token: str) -> HttpConnection | None:
        """The live connection for ``token``."""
        connection = self._by_token.get(token)
        if connection is None or connection.state is ConnectionState.CLOSED:
            return None
        return connection

    def get_draining(self, token: str) -> tuple[HttpConnection, Sink] | None:
        """A closed connection whose sink still holds its last bytes (a long poll collects them)."""
        entry = self._draining.get(token)
        return None if entry is None else (entry[0], entry[1])

    def forget_draining(self, token: str) -> None:
        self._draining.pop(token, None)

    def undelivered(self) -> list[HttpConnection]:
        """Closed connections whose last bytes (their Close) still wait for the client to collect them:
        long-polling clients between two polls. (WebSocket and SSE sinks write theirs to the socket.)"""
        return [connection for connection, sink, _ in self._draining.values() if not sink.drained]

    def attach(self, connection: HttpConnection, transport: Transport, sink: Sink) -> bool:
        """Attach a transport's sink; returns whether this resumes an existing hub connection."""
        resumed = connection.state is ConnectionState.INACTIVE and connection.transport is transport
        connection.transport = transport
        connection.capabilities = sink.capabilities
        connection.sink = sink
        connection.next_scan = 0.0
        connection.state = ConnectionState.ACTIVE
        self.application.on_transport_attached(connection, resumed=resumed)
        return resumed

    def can_resume(self, connection: HttpConnection) -> bool:
        """Whether a stateful reconnect may take ``connection`` over without it missing anything."""
        return self.application.can_resume(connection)

    def buffer_early_input(self, connection: HttpConnection, data: bytes, *, limit: int) -> bool:
        """Keep bytes sent before any transport started; False when that would exceed ``limit``."""
        early = connection.early_input
        if early is None:
            early = connection.early_input = bytearray()
        if len(early) + len(data) > limit:
            return False
        early += data
        return True

    async def attach_and_deliver(self, connection: HttpConnection, transport: Transport, sink: Sink) -> bool:
        """``attach``, then hand the application whatever the client sent before a transport existed."""
        resumed = self.attach(connection, transport, sink)
        early, connection.early_input = connection.early_input, None
        if early:
            await self.application.on_data(connection, bytes(early))
        return resumed

    async def receive(self, connection: HttpConnection, data: bytes) -> None:
        """Bytes the client sent on ``connection``'s transport, in order."""
        await self.application.on_data(connection, data)

    def detach(self, connection: HttpConnection, sink: Sink, *, keep_alive: bool) -> None:
        """A transport request ended. ``keep_alive``: the connection may come back (LP, stateful WS)."""
        if connection.sink is not sink or connection.state is ConnectionState.CLOSED:
            return  # a newer request already took over, or the connection is gone
        connection.sink = None
        connection.next_scan = 0.0
        if keep_alive:
            connection.state = ConnectionState.INACTIVE
            connection.inactive_since = self._clock()
            self.application.on_transport_lost(connection)
        else:
            self.dispose(connection)

    def drop_slow(self, connection: HttpConnection, cause: str) -> None:
        """Drop a client that cannot keep up: counted in ``realtime_hub_slow_client_disconnects_total``
        by ``cause`` (``buffer_full``, ``send_timeout``, ``not_polling``), logged as
        ``connection.slow_client``, closed with the reason ``slow_client`` — and its socket aborted,
        since a Close it does not read would only wait behind everything else it does not read."""
        if connection.state is ConnectionState.CLOSED:
            return
        SLOW_CLIENT_DISCONNECTS.labels(cause).inc()
        log.warning(
            "connection.slow_client",
            connectionId=connection.connection_id,
            reason=cause,
            transport=connection.transport.value if connection.transport else "none",
        )
        self.dispose(connection, "slow_client", abort=True)

    def dispose(
        self, connection: HttpConnection, reason: str = "transport_closed", *, abort: bool = False
    ) -> None:
        """End a connection for good. Safe to call more than once; the first ``reason`` is kept.
        ``abort``: drop the transport without a goodbye (see ``drop_slow``)."""
        if connection.state is ConnectionState.CLOSED:
            return
        connection.state = ConnectionState.CLOSED
        if connection.close_reason is None:
            connection.close_reason = reason
        self._by_token.pop(connection.connection_token, None)
        # A fresher token may replace the principal, never its subject (the endpoint checks it).
        subject = connection.principal.subject
        remaining = self._per_user.get(subject, 0) - 1
        if remaining > 0:
            self._per_user[subject] = remaining
        else:
            self._per_user.pop(subject, None)
        sink, connection.sink = connection.sink, None
        if sink is not None and abort:
            sink.abort()
        elif sink is not None:
            sink.close()
            if not sink.drained:
                self._draining[connection.connection_token] = (connection, sink, self._clock())
        self.application.on_closed(connection)

    def scan(self, part: int = 0, parts: int = 1) -> None:
        """Heartbeat: dispose connections left without a transport longer than DisconnectTimeout, and
        those whose socket made no progress for the send timeout.

        Slice ``part`` of ``parts``: a round of ``parts`` calls (about a second) visits every
        connection once, so that no call holds the event loop for all of them (like ``tick``).
        """
        now = self._clock()
        deadline = now - self._disconnect_timeout
        if part == 0:
            for token, (_, sink, closed_at) in list(self._draining.items()):
                if sink.drained or closed_at < deadline:
                    del self._draining[token]
            self._round = list(self._by_token.values())
        members = self._round
        count = len(members)
        if part >= parts - 1:
            self._round = []
        active = ConnectionState.ACTIVE
        # Sockets that connected together are due together, a send timeout after their last look:
        # a step found a whole slice due and asked ~500 kernels at once, 2-3.5 ms of the loop at
        # 10,000 connections (issue 12). A quarter of a slice per step; the rest a round later (the
        # buffer bound still drops a client that stops reading at once), which spreads them for good.
        asks = max(_MIN_ASKS_PER_STEP, count // parts // 4)
        # Every connection once a round, but a socket its sink called quiet is not asked again until
        # then (``Sink.quiet_until``): asking touched three objects per connection every second, and
        # was most of the heartbeat's cost at 10,000+ connections (issue 12).
        for connection in members[part * count // parts : (part + 1) * count // parts]:
            if connection.next_scan > now:
                continue
            state = connection.state
            if state is active:
                attached = connection.sink
                if attached is None or asks <= 0:
                    continue
                asks -= 1
                if not attached.is_stalled(now):
                    connection.next_scan = attached.quiet_until(now)
                    continue
                cause = attached.stall_cause
                if cause is not None:
                    self.drop_slow(connection, cause)
                    continue
            elif state is ConnectionState.CLOSED or connection.inactive_since >= deadline:
                continue
            log.info("connection.expired", connectionId=connection.connection_id, state=state.value)
            self.dispose(connection, "expired")

    def dispose_all(self, reason: str = "shutdown") -> None:
        for connection in list(self._by_token.values()):
            self.dispose(connection, reason)
