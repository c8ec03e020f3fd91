"""One hub connection: handshake, the read → decode → dispatch loop, keep-alive, timeouts, Close.

This follows ASP.NET's ``HubConnectionHandler``/``HubConnectionContext``: the first record picks the
hub protocol; then every record is decoded and dispatched in order (``MaximumParallelInvocationsPerClient``
is 1); the heartbeat sends Pings, enforces the handshake and client timeouts and token expiry; a
protocol error closes the connection with a Close message that lets the client reconnect.

Everything a connection needs is given at construction (``HubServices``: options, clock, lifetime
manager, dispatcher); it never calls back into the handler that created it. What it may do depends
on what its transport can do (``connection.capabilities``), never on which transport it is.

Rule: this is the one place where a connection-level failure becomes a ``Close`` message.
"""

from __future__ import annotations

import asyncio
import logging

import structlog

from service.connections import HttpConnection, Outgoing
from service.limits import TokenBucket
from service.metrics import (
    PROTOCOL_ERRORS,
    RATE_LIMITED,
)
from service.protocol import (
    HANDSHAKE_OK,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HandshakeError,
    HubMessage,
    HubProtocol,
    InvocationMessage,
    MessageReader,
    MessageTooLargeError,
    PingMessage,
    ProtocolError,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    handshake_error_response,
    is_trackable,
)

from .announce import announce_closed, announce_connected
from .dispatcher import CallerContext
from .handshake import read_handshake
from .replay import ReplayBuffer
from .services import HubServices

__all__ = ["HubConnection"]

log = structlog.get_logger(__name__)

_CLOSED_WITH_ERROR = "Connection closed with an error."
_IDLE_VISIT = 60.0
"""The longest the heartbeat leaves a connection unvisited when no timer of it is running."""


class HubConnection:
    """The hub's view of one connection: its protocol, timers, and the Close it ends with."""

    __slots__ = (
        "_handshake_buffer",
        "_invocations",
        "_reader",
        "_refusal_logged",
        "_replay",
        "_services",
        "_turn_left",
        "client_timeout_armed",
        "closed",
        "connection",
        "dispatching",
        "handshake_deadline",
        "last_received",
        "last_written",
        "next_visit",
        "positions",
        "protocol",
    )

    def __init__(self, connection: HttpConnection, services: HubServices) -> None:
        self.connection = connection
        self.positions = connection.positions
        self._services = services
        now = services.clock.now
        self.protocol: HubProtocol | None = None
        self._reader: MessageReader | None = None
        self._handshake_buffer: bytearray | None = bytearray()
        self._replay: ReplayBuffer | None = None
        self.handshake_deadline = now + services.options.handshake_timeout
        self.last_received = now
        self.last_written = now
        # HubConnectionContext: the client timeout starts with the client's first Ping, so clients
        # that never ping (long polling) are not dropped.
        self.client_timeout_armed = False
        # While a method runs, nothing is read (Pings included), so the client timeout stops, as
        # ASP.NET's HubConnectionHandler does around each dispatch, and restarts when it returns.
        # A count: a transport's early input and a POST, or an old socket's last call and the new
        # socket's, can run methods at the same time.
        self.dispatching = 0
        self.closed = False
        # The heartbeat skips this connection until then (see tick); 0: at its next round.
        self.next_visit = 0.0
        # Records this connection may still process before it lets everyone else run (see receive).
        self._turn_left = services.options.messages_per_turn
        self._refusal_logged = False  # its first refused invocation is logged at INFO, the rest at DEBUG
        # HUB_MAX_INVOCATIONS_PER_SECOND / HUB_INVOCATION_BURST: every invocation takes a token. Made on
        # the first invocation and forgotten by the heartbeat once full again (a full bucket is a new
        # one): an idle connection keeps none (issue 12, memory per idle WebSocket).
        self._invocations: TokenBucket | None = None

    @property
    def connection_id(self) -> str:
        return self.connection.connection_id

    # --- inbound ------------------------------------------------------------------------------

    async def receive(self, data: bytes) -> None:
        """Process bytes from the transport, in order; frame boundaries mean nothing.

        Fairness: after ``messages_per_turn`` records (counted across calls — a WebSocket read loop
        takes frames already buffered without ever waiting) the connection yields to the event loop,
        so that a socket with thousands of records queued cannot hold everyone else's events, reads
        and health checks until it is done (issue 11: one flood took a bystander's p99 from 3 to
        588 ms). Records stay in order: nothing else reads this connection meanwhile.
        """
        if self.closed:
            return
        self.last_received = self._services.clock.now
        reader = self._reader
        if reader is None:
            protocol = self.protocol
            if protocol is None:
                data = self._receive_handshake(data)
                protocol = self.protocol
                if protocol is None or not data:
                    return
            # The reader exists while it holds bytes: an idle connection keeps none (issue 12).
            reader = self._reader = protocol.new_reader(self._services.options.max_message_size)
        try:
            reader.feed(data)
            while not self.closed:
                message = reader.next_message()
                if message is None:
                    break
                self.dispatching += 1
                try:
                    await self._dispatch(message)
                finally:
                    self.dispatching -= 1
                    self.last_received = self._services.clock.now
                self._turn_left -= 1
                if self._turn_left <= 0:
                    self._turn_left = self._services.options.messages_per_turn
                    await asyncio.sleep(0)
            if not reader.buffered_size and self._reader is reader:
                self._reader = None  # nothing half-read: the next bytes start a new reader
        except ProtocolError as error:
            kind = "too_large" if isinstance(error, MessageTooLargeError) else "invalid_message"
            PROTOCOL_ERRORS.labels(kind).inc()
            log.info("connection.protocol_error", error=str(error))
            self.close(
                error=f"{_CLOSED_WITH_ERROR} InvalidDataException: {error}",
                allow_reconnect=True,
                reason="protocol_error",
            )

    def _receive_handshake(self, data: bytes) -> bytes:
        buffer = self._handshake_buffer
        assert buffer is not None
        buffer += data
        options = self._services.options
        connection = self.connection
        try:
            agreed = read_handshake(buffer, connection, options.max_message_size)
        except HandshakeError as error:
            self._fail_handshake(error.reply)
            return b""
        if agreed is None:
            return b""
        self._handshake_buffer = None
        self.protocol = protocol = agreed.protocol
        self.next_visit = 0.0
        self.handshake_deadline = 0.0  # done with (and one float less per connection)
        # HubConnectionContext.HandshakeAsync: the response goes out in the negotiated transfer format.
        connection.transfer_format = protocol.transfer_format
        if agreed.resumable:
            connection.resumable = True
            self._replay = ReplayBuffer(options.replay_buffer_size)
        self._write(Outgoing(HANDSHAKE_OK))
        self._services.lifetime.on_connected(self)
        announce_connected(connection, protocol)
        return agreed.remaining

    def _fail_handshake(self, reply: str) -> None:
        log.info("connection.handshake_failed", connectionId=self.connection_id, error=reply)
        PROTOCOL_ERRORS.labels("handshake").inc()
        self._write(Outgoing(handshake_error_response(reply)))
        self._finish("handshake_failed")

    async def _dispatch(self, message: HubMessage) -> None:
        replay = self._replay
        if replay is not None and is_trackable(message) and not replay.should_process():
            return  # a message the client replays after a resume that we already processed
        if isinstance(message, InvocationMessage | StreamInvocationMessage):
            options = self._services.options
            if options.max_invocations_per_second > 0:
                now = self._services.clock.now
                bucket = self._invocations
                if bucket is None:
                    bucket = self._invocations = TokenBucket(
                        options.max_invocations_per_second, options.invocation_burst, now
                    )
                if not bucket.take(now):
                    self._close_rate_limited(bucket)
                    return
        if isinstance(message, InvocationMessage):
            services, connection = self._services, self.connection
            caller = CallerContext(
                connection.connection_id, connection.principal, services.lifetime, self.positions
            )
            level = logging.DEBUG if self._refusal_logged else logging.INFO
            completion = await services.dispatcher.run(caller, message, refusal_level=level)
            if completion.error is not None:
                self._refusal_logged = True
            # HubProtocol.md: a non-blocking invocation (no invocationId) gets no reply, not even errors.
            if message.invocation_id is not None:
                self.send(completion)
        elif isinstance(message, PingMessage):
            if not self.client_timeout_armed:
                self.client_timeout_armed = True
                self.next_visit = 0.0
        elif isinstance(message, CloseMessage):
            # The client is stopping: answer with Close, then end the transport (HubProtocol.md, "Close").
            log.info("connection.client_closed", error=message.error)
            self.close(reason="client")
        elif isinstance(message, AckMessage):
            if replay is not None:
                replay.ack(message.sequence_id)
        elif isinstance(message, SequenceMessage):
            if replay is not None:
                replay.on_sequence(message.sequence_id)
        elif isinstance(message, StreamInvocationMessage):
            self.send(self._services.dispatcher.stream_invocation_error(message))
        elif isinstance(message, StreamItemMessage | CompletionMessage | CancelInvocationMessage):
            # No hub method takes upload streams or asks for client results: ASP.NET ignores items and
            # completions for unknown ids, and cancelling an unknown invocation is a no-op.
            log.debug("connection.ignored_message", type=type(message).__name__)

    def _close_rate_limited(self, bucket: TokenBucket) -> None:
        """Too many calls: one warning, one count, and a Close that tells the client not to come back.

        ``allowReconnect`` is false: a client that calls this often is broken or hostile, and an
        official client told it may reconnect would start the same loop again at once (a raw one
        ignores the flag either way; the per-user limits of negotiate bound it).
        """
        RATE_LIMITED.labels("invocations").inc()
        log.warning(
            "connection.rate_limited",
            limit="invocations",
            perSecond=bucket.rate,
            burst=bucket.burst,
            subject=self.connection.principal.subject,
        )
        self.close(
            error=f"{_CLOSED_WITH_ERROR} The client sent more than {bucket.rate:g} invocations per second "
            f"(bursts of up to {bucket.burst:g}); closed.",
            allow_reconnect=False,
            reason="rate_limited",
        )

    # --- outbound -----------------------------------------------------------------------------

    def send(self, message: HubMessage) -> bool:
        """Serialize one message for this connection alone and send it."""
        protocol = self.protocol
        if protocol is None or self.closed:
            return False
        out = Outgoing(protocol.write(message))
        if self._replay is not None and is_trackable(message):
            self._replay.record_sent(out.payload)
        if not self._write(out):
            self.drop_slow("buffer_full")
            return False
        return True

    def send_outgoing(self, out: Outgoing) -> bool:
        """Group-send path: ``out`` is an Invocation already serialized for this connection's protocol."""
        if self.closed:
            return True
        replay = self._replay
        if replay is not None:
            replay.record_sent(out.payload)
        self.last_written = self._services.clock.now
        sink = self.connection.sink  # HttpConnection.write, inlined: this runs once per member
        return True if sink is None else sink.write(out)

    def send_burst(self, outs: list[Outgoing]) -> bool:
        """Several messages at once (a replay), each already serialized for this protocol: allowed past
        the buffer bound by their own size, so that a replay larger than the bound still gets through
        (it is bounded by REPLAY_MAX_EVENTS). False: the client cannot take even that."""
        if self.closed:
            return True
        sink = self.connection.sink
        if sink is not None:
            sink.grant(sum(len(out.payload) + 14 for out in outs))  # + worst-case frame headers
        return all(self.send_outgoing(out) for out in outs)

    def _write(self, out: Outgoing) -> bool:
        self.last_written = self._services.clock.now
        return self.connection.write(out)

    # --- stateful reconnect -------------------------------------------------------------------

    @property
    def can_resume(self) -> bool:
        """False once the replay buffer dropped a message the client had not acked."""
        return self._replay is None or not self._replay.lossy

    def resume(self) -> None:
        """A new WebSocket took over: send Sequence, then everything the client has not acked."""
        replay = self._replay
        protocol = self.protocol
        if replay is None or protocol is None:
            return
        if not self.can_resume:  # the endpoint refuses such a resume; this one overflowed since
            log.info("connection.resume_refused", reason="replay_buffer_overflow")
            # The client drops everything after a reconnect until a Sequence arrives (MessageBuffer in
            # every official client), so the Close must follow one. Its id is the first the client
            # has not acked: no more than it received, so the client accepts it and reads the Close.
            self._write(Outgoing(protocol.write(SequenceMessage(replay.acked_through + 1))))
            self.close(
                error=f"{_CLOSED_WITH_ERROR} Messages were dropped while the connection was away.",
                allow_reconnect=True,
                reason="resume_lossy",
            )
            return
        first, payloads = replay.resend()
        log.info("connection.resumed", replayed=len(payloads))
        self._write(Outgoing(protocol.write(SequenceMessage(first))))
        for payload in payloads:
            self._write(Outgoing(payload))

    # --- heartbeat ----------------------------------------------------------------------------

    def tick(self, now: float, wall_clock: float) -> None:
        """Called by the heartbeat while ``now >= next_visit``: do what is due, then set ``next_visit``
        to the earliest time anything can be due again. Timers run from times that only move forward
        (last write, last receive) or are fixed, so an early visit just comes back later; anything
        else that moves a timer (handshake, first Ping, new transport) sets ``next_visit`` to 0."""
        if self.closed:
            return
        options = self._services.options
        protocol = self.protocol
        if protocol is None:
            if now >= self.handshake_deadline:
                self._fail_handshake("Handshake was canceled.")
            self.next_visit = self.handshake_deadline
            return
        connection = self.connection
        visit = now + _IDLE_VISIT
        bucket = self._invocations
        if bucket is not None:
            if bucket.full(now):
                self._invocations = None  # refilled: the same as the new one the next invocation makes
            else:
                visit = now  # look again next round, until it can be dropped
        if options.close_on_authentication_expiration:
            expires_in = connection.principal.expires_at - wall_clock
            if expires_in <= 0:
                log.info("connection.token_expired", connectionId=self.connection_id)
                self.close(allow_reconnect=True, reason="token_expired")
                return
            visit = min(visit, now + expires_in)
        if self.client_timeout_armed and self.dispatching:
            visit = min(visit, now + options.client_timeout)  # it restarts no later than now
        elif self.client_timeout_armed:
            if now - self.last_received > options.client_timeout:
                self.close(
                    error=f"{_CLOSED_WITH_ERROR} Client hasn't sent a message/ping within the configured "
                    "ClientTimeoutInterval.",
                    allow_reconnect=True,
                    reason="client_timeout",
                )
                return
            visit = min(visit, self.last_received + options.client_timeout)
        if connection.sink is None:
            self.next_visit = visit
            return  # a stateful WebSocket waiting for its resume
        replay = self._replay
        if replay is not None:
            sequence_id = replay.ack_due()
            if sequence_id is not None:
                self.send(AckMessage(sequence_id))
            visit = now  # acks are due whenever something arrived: every round, as ASP.NET does
        # Long polling has inherent keep-alive: no Pings (ASP.NET's IConnectionInherentKeepAliveFeature).
        if connection.capabilities.needs_keep_alive:
            if now - self.last_written >= options.keep_alive:
                if not self._services.ping_budget.take():
                    visit = now  # this step's Pings are spent: next round (see PingBudget)
                elif not self._write(self._services.ping(protocol)):
                    self.drop_slow("buffer_full")
                    return
            visit = min(visit, self.last_written + options.keep_alive)
        self.next_visit = visit

    # --- closing ------------------------------------------------------------------------------

    def close(self, *, error: str | None = None, allow_reconnect: bool = False, reason: str) -> None:
        """Say goodbye with a Close message, then end the connection."""
        if self.closed:
            return
        if self.protocol is not None:
            self._write(
                Outgoing(self.protocol.write(CloseMessage(error=error, allow_reconnect=allow_reconnect)))
            )
        self._finish(reason)

    def abort(self, reason: str) -> None:
        """End the connection without a goodbye (the client is not reading anyway)."""
        self._finish(reason)

    def drop_slow(self, cause: str) -> None:
        """The client cannot keep up: no goodbye (it would not read it); counted and logged by the
        connection layer (``ConnectionManager.drop_slow``)."""
        if self.closed:
            return
        self.closed = True
        self.connection.drop_slow(cause)

    def _finish(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.connection.abort(reason)

    def on_closed(self) -> None:
        """The connection is gone (whoever ended it, for the reason it keeps): count it."""
        self.closed = True
        announce_closed(self.connection, self.protocol)
