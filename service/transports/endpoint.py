"""The HTTP face of the hub: ``POST {hub}/negotiate`` and the transport requests at ``{hub}``.

ASP.NET's ``HttpConnectionDispatcher`` in Python. Every request is authenticated (401 with an empty
body and ``WWW-Authenticate``, before any upgrade), its ``Origin`` checked (403), then routed:

| request                           | meaning                                  |
|-----------------------------------|------------------------------------------|
| GET with ``Upgrade: websocket``   | WebSockets (no ``id``: skipNegotiation)  |
| GET with ``Accept: text/event-stream`` | Server-Sent Events receive stream   |
| any other GET                     | a long poll                              |
| POST                              | client → server bytes (SSE, LP)          |
| DELETE                            | graceful close (LP only)                 |

Rule: a refusal is raised as one of the ``HubHttpError`` exceptions of ``errors.py`` (statuses and
texts are those of ASP.NET Core's ``HttpConnectionDispatcher.cs``); the two handlers (``negotiate``,
``connect``) turn it into the response themselves — not a middleware, whose frame every WebSocket
would keep for its whole life. Everything else here returns only successful responses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass

import structlog
from aiohttp import hdrs, web
from structlog.contextvars import bind_contextvars, bound_contextvars, reset_contextvars

from config.settings import Settings, Transport
from service.auth import ConnectionTickets, Principal, TokenValidator
from service.connections import ConnectionManager, ConnectionState, HttpConnection, Sink
from service.protocol import (
    AvailableTransport,
    NegotiateError,
    negotiate_error_response,
    negotiate_response,
    parse_bool_query,
    parse_negotiate_version,
)
from service.write_batch import WriteBatch

from .admission import UserAdmission
from .errors import (
    AtCapacityError,
    ConnectionIdRequiredError,
    ConnectionNotFoundError,
    ConnectionOfAnotherUserError,
    DeleteNotSupportedError,
    EarlyInputTooLargeError,
    HubHttpError,
    MethodNotAllowedError,
    PostToWebSocketError,
    ResumeLossyError,
    ShuttingDownError,
    TransportChangeError,
    TransportConflictError,
    TransportNotSupportedError,
)
from .guard import RequestGuard, query_value
from .long_polling import serve_final_poll, serve_poll
from .sse import serve_server_sent_events
from .websockets import serve_websocket

__all__ = ["EndpointOptions", "HubEndpoint"]

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class EndpointOptions:
    transports: tuple[Transport, ...] = tuple(Transport)
    allowed_origins: frozenset[str] = frozenset()
    stateful_reconnect: bool = True
    max_frame_size: int = 131_072
    max_buffered: int = 131_072
    send_buffer: int = 0  # SO_SNDBUF of WebSocket and SSE sockets; 0: the kernel's default
    send_timeout: float = 10.0
    poll_timeout: float = 90.0
    disconnect_timeout: float = 15.0
    websocket_compression: bool = False
    max_connections_per_user: int = 0  # 0: no limit
    negotiates_per_user_per_minute: int = 0  # 0: no limit
    negotiate_burst: int = 10  # of those, at once at most

    @classmethod
    def from_settings(cls, settings: Settings) -> EndpointOptions:
        # Keep the listed order (WebSockets, SSE, LP): clients try transports in server order.
        transports = tuple(t for t in Transport if t in settings.hub_transports)
        return cls(
            transports=transports,
            allowed_origins=frozenset(settings.cors_origins),
            stateful_reconnect=settings.hub_stateful_reconnect,
            # A WebSocket frame may batch several records; each record is held to the message limit.
            max_frame_size=max(4 * settings.hub_max_receive_message_size, 65_536),
            max_buffered=settings.hub_max_buffered_bytes,
            send_buffer=settings.hub_socket_send_buffer_bytes,
            send_timeout=settings.hub_transport_send_timeout,
            poll_timeout=settings.hub_long_polling_timeout,
            disconnect_timeout=settings.hub_disconnect_timeout,
            websocket_compression=settings.hub_websocket_compression,
            max_connections_per_user=settings.hub_max_connections_per_user,
            negotiates_per_user_per_minute=settings.hub_max_negotiates_per_user_per_minute,
            negotiate_burst=settings.hub_negotiate_burst,
        )

    def available_transports(self) -> tuple[AvailableTransport, ...]:
        return tuple(AvailableTransport.named(t) for t in self.transports)


def _wants_positions(request: web.Request) -> bool:
    """``?positions=true`` on the hub URL: every event carries its log position as a last argument.

    Read where the connection is created (negotiate, or a WebSocket without ``id``); the official
    clients keep the hub URL's query on every request, so it is there in both places.
    """
    return parse_bool_query(query_value(request, "positions"))


class HubEndpoint:
    """Negotiate and transport handlers for one hub path."""

    def __init__(
        self,
        manager: ConnectionManager,
        validator: TokenValidator,
        options: EndpointOptions,
        *,
        batch: WriteBatch,
        tickets: ConnectionTickets | None = None,
    ) -> None:
        self._manager = manager
        self._batch = batch
        self._guard = RequestGuard(
            manager, validator, allowed_origins=options.allowed_origins, tickets=tickets
        )
        self._options = options
        self._available = options.available_transports()
        self._admission = UserAdmission(
            manager,
            max_connections=options.max_connections_per_user,
            per_minute=options.negotiates_per_user_per_minute,
            burst=options.negotiate_burst,
        )
        self._send_locks: dict[str, asyncio.Lock] = {}
        self._accepting = True

    def stop_accepting(self) -> None:
        """Shutdown: no new connection from now on (503); existing ones still poll and post."""
        self._accepting = False

    # --- shared checks --------------------------------------------------------------------------

    def _admit(self, principal: Principal) -> None:
        """May this user have one more connection? (503 when the instance is full or shutting down,
        429 for the user.)"""
        if not self._accepting:
            raise ShuttingDownError()
        if self._manager.at_capacity:
            raise AtCapacityError()
        self._admission.admit(principal.subject)

    # --- negotiate --------------------------------------------------------------------------------

    async def negotiate(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._negotiate(request)
        except HubHttpError as refusal:
            return refusal.response()

    async def _negotiate(self, request: web.Request) -> web.StreamResponse:
        if request.method != hdrs.METH_POST:
            raise MethodNotAllowedError()
        principal = await self._guard.caller(request, ticket_allowed=False)
        try:
            version = parse_negotiate_version(query_value(request, "negotiateVersion"))
        except NegotiateError as error:
            return web.Response(body=negotiate_error_response(str(error)), content_type="application/json")
        self._admit(principal)
        stateful = self._options.stateful_reconnect and parse_bool_query(
            query_value(request, "useStatefulReconnect")
        )
        connection = self._manager.create(
            principal=principal,
            negotiate_version=version,
            stateful_reconnect=stateful,
            positions=_wants_positions(request),
        )
        body = negotiate_response(
            connection_id=connection.connection_id,
            connection_token=connection.connection_token if version > 0 else None,
            negotiate_version=version,
            transports=self._available,
            use_stateful_reconnect=stateful,
            access_token=self._guard.ticket_for(connection),
        )
        log.debug("connection.negotiated", connectionId=connection.connection_id, version=version)
        return web.Response(body=body, content_type="application/json")

    # --- transports -------------------------------------------------------------------------------

    async def connect(self, request: web.Request) -> web.StreamResponse:
        try:
            method = request.method
            if method not in (hdrs.METH_GET, hdrs.METH_POST, hdrs.METH_DELETE):
                raise MethodNotAllowedError()
            principal = await self._guard.caller(request)
            if method == hdrs.METH_GET:
                # A WebSocket or SSE stream is awaited here for its whole life: only this frame and the
                # transport's own stay alive under it (every coroutine frame in between costs each
                # connection its memory), so the steps before are synchronous, and this frame keeps
                # no local it no longer needs (the query's id, the principal).
                transport = self._transport_of(request)
                opened = self._open(request, principal, transport)
                if isinstance(opened, web.StreamResponse):
                    return opened
                del principal
                if transport is Transport.WEBSOCKETS:
                    # Binds the connection's id to its logs around each call into the hub itself: a
                    # binding held for the socket's life is ~0.25 KB per connection (issue 12).
                    return await self._serve(request, opened, transport)
                # Logs of this request (and of the hub handling what it carries) name the connection.
                bound = bind_contextvars(connectionId=opened.connection_id)
                try:
                    return await self._serve(request, opened, transport)
                finally:
                    reset_contextvars(**bound)
            token = query_value(request, "id")
            if token is None:
                raise ConnectionIdRequiredError()
            if method == hdrs.METH_POST:
                return await self._send(request, principal, token)
            return self._delete(principal, token)
        except HubHttpError as refusal:
            # Raised only before a transport starts (no transport raises one).
            return refusal.response()

    def _transport_of(self, request: web.Request) -> Transport:
        if request.headers.get(hdrs.UPGRADE, "").lower() == "websocket":
            return Transport.WEBSOCKETS
        if "text/event-stream" in request.headers.get(hdrs.ACCEPT, ""):
            return Transport.SERVER_SENT_EVENTS
        return Transport.LONG_POLLING

    def _lookup(self, principal: Principal, token: str) -> HttpConnection:
        connection = self._manager.get(token)
        if connection is None:
            raise ConnectionNotFoundError()
        _check_owner(connection, principal)
        return connection

    def _lookup_draining(self, principal: Principal, token: str) -> Sink:
        """The sink of a closed connection whose last bytes still wait for its own user."""
        draining = self._manager.get_draining(token)
        if draining is None:
            raise ConnectionNotFoundError()
        connection, sink = draining
        _check_owner(connection, principal)
        return sink

    def _open(
        self, request: web.Request, principal: Principal, transport: Transport
    ) -> HttpConnection | web.StreamResponse:
        """The connection a GET of ``transport`` is for (or the final poll of a closed one)."""
        token = query_value(request, "id")
        if transport not in self._options.transports:
            raise TransportNotSupportedError(transport.value)
        if token is None:
            if transport is not Transport.WEBSOCKETS:
                raise ConnectionIdRequiredError()
            self._admit(principal)
            # skipNegotiation: a WebSocket without id is a brand-new connection (version 0 semantics).
            connection = self._manager.create(
                principal=principal,
                negotiate_version=0,
                stateful_reconnect=False,
                positions=_wants_positions(request),
            )
        else:
            try:
                connection = self._lookup(principal, token)
            except ConnectionNotFoundError:
                if transport is not Transport.LONG_POLLING:
                    raise
                return serve_final_poll(self._manager, token, self._lookup_draining(principal, token))
            bound = bind_contextvars(connectionId=connection.connection_id)
            try:
                self._continue(connection, principal, transport)
            finally:
                reset_contextvars(**bound)
        return connection

    def _continue(self, connection: HttpConnection, principal: Principal, transport: Transport) -> None:
        """A transport request for an existing connection: same transport, one at a time."""
        if connection.transport is None and not self._accepting:
            raise ShuttingDownError()  # negotiated before the shutdown, never started: a new connection
        if connection.transport is not None and connection.transport is not transport:
            raise TransportChangeError()
        if connection.transport is Transport.WEBSOCKETS and not self._manager.can_resume(connection):
            log.info("connection.resume_refused", reason="replay_buffer_overflow")
            self._manager.dispose(connection, "resume_lossy", abort=True)
            raise ResumeLossyError()
        if connection.state is ConnectionState.ACTIVE and transport is not Transport.LONG_POLLING:
            if not (transport is Transport.WEBSOCKETS and connection.resumable):
                raise TransportConflictError()
            # Stateful reconnect while the old socket still looks open: it loses (CancelPreviousPoll).
            old = connection.sink
            assert old is not None
            self._manager.detach(connection, old, keep_alive=True)
            old.close()
        connection.principal = principal  # a fresher token extends the connection's authentication

    def _serve(
        self, request: web.Request, connection: HttpConnection, transport: Transport
    ) -> Awaitable[web.StreamResponse]:
        """The transport's coroutine, not awaited here (no frame of this method stays alive)."""
        options = self._options
        if transport is Transport.WEBSOCKETS:
            return serve_websocket(
                request,
                connection,
                self._manager,
                batch=self._batch,
                max_frame_size=options.max_frame_size,
                max_buffered=options.max_buffered,
                send_timeout=options.send_timeout,
                compress=options.websocket_compression,
                send_buffer=options.send_buffer,
            )
        if transport is Transport.SERVER_SENT_EVENTS:
            return serve_server_sent_events(
                request,
                connection,
                self._manager,
                max_buffered=options.max_buffered,
                send_timeout=options.send_timeout,
                send_buffer=options.send_buffer,
            )
        return serve_poll(
            request,
            connection,
            self._manager,
            poll_timeout=options.poll_timeout,
            max_buffered=options.max_buffered,
            disconnect_timeout=options.disconnect_timeout,
        )

    async def _send(self, request: web.Request, principal: Principal, token: str) -> web.StreamResponse:
        connection = self._lookup(principal, token)
        if connection.transport is Transport.WEBSOCKETS:
            raise PostToWebSocketError()
        if connection.transport is None and not self._accepting:
            raise ShuttingDownError()  # negotiated before the shutdown, never started: a new connection
        body = await request.read()  # bounded by the application's client_max_size
        if connection.transport is None:
            # Before the first poll/stream (signalrcore sends its handshake first): keep it for the
            # transport, as ASP.NET's connection pipe does.
            if not self._manager.buffer_early_input(connection, body, limit=self._options.max_frame_size):
                raise EarlyInputTooLargeError()
            return web.Response(status=200, content_type="text/plain")
        # The JS client never has two sends in flight, but others may: keep records in order.
        lock = self._send_locks.setdefault(connection.connection_id, asyncio.Lock())
        try:
            async with lock:
                if connection.state is not ConnectionState.CLOSED:
                    with bound_contextvars(connectionId=connection.connection_id):
                        await self._manager.receive(connection, body)
        finally:
            if not lock.locked() and self._send_locks.get(connection.connection_id) is lock:
                del self._send_locks[connection.connection_id]
        return web.Response(status=200, content_type="text/plain")

    def _delete(self, principal: Principal, token: str) -> web.StreamResponse:
        try:
            connection = self._lookup(principal, token)
        except ConnectionNotFoundError:
            self._lookup_draining(principal, token)
            self._manager.forget_draining(token)
            return web.Response(status=202, content_type="text/plain")
        if connection.transport is not Transport.LONG_POLLING:
            raise DeleteNotSupportedError()
        with bound_contextvars(connectionId=connection.connection_id):
            log.info("connection.delete")
            self._manager.dispose(connection, "client")
        return web.Response(status=202, content_type="text/plain")


def _check_owner(connection: HttpConnection, principal: Principal) -> None:
    """Only the user who negotiated a connection may use it, open or closing (its token may have leaked)."""
    if connection.principal.subject != principal.subject:
        log.warning("connection.user_mismatch", connectionId=connection.connection_id)
        raise ConnectionOfAnotherUserError()
