"""An in-memory peer for the hub core: real ``ConnectionManager`` / ``HubConnectionHandler`` objects
whose transport is a recording sink, driven by a clock the test moves by hand. No sockets, no loop
timers: a test feeds bytes in and reads the records that would have gone on the wire.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import msgpack

from config.settings import Transport
from service.auth import GroupPolicy, Principal
from service.connections import Capabilities, ConnectionManager, HttpConnection, Outgoing
from service.hub import (
    EventJournal,
    History,
    HubClock,
    HubConnection,
    HubConnectionHandler,
    HubMethods,
    HubOptions,
    InMemoryHubLifetimeManager,
    RecommendationsHub,
)
from service.protocol import TRANSFER_FORMATS

JSON_HANDSHAKE = b'{"protocol":"json","version":1}\x1e'
MSGPACK_HANDSHAKE = b'{"protocol":"messagepack","version":1}\x1e'

WEBSOCKET_LIKE = Capabilities(
    transfer_formats=TRANSFER_FORMATS[Transport.WEBSOCKETS], resumable=True, needs_keep_alive=True
)
TEXT_ONLY = Capabilities(
    transfer_formats=TRANSFER_FORMATS[Transport.SERVER_SENT_EVENTS], resumable=False, needs_keep_alive=True
)
POLLING_LIKE = Capabilities(
    transfer_formats=TRANSFER_FORMATS[Transport.LONG_POLLING], resumable=False, needs_keep_alive=False
)


class ManualClock:
    """Monotonic and wall clock a test moves by hand."""

    def __init__(self, now: float = 1000.0, wall: float | None = None) -> None:
        self.now = now
        self.wall = time.time() if wall is None else wall

    def monotonic(self) -> float:
        return self.now

    def wall_time(self) -> float:
        return self.wall

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall += seconds


class RecordingSink:
    """A transport that keeps what it is given; ``accept=False`` plays a client that cannot keep up,
    ``limit`` one that reads nothing: it takes that many bytes (plus what ``grant`` allows), no more."""

    def __init__(
        self, capabilities: Capabilities = WEBSOCKET_LIKE, *, accept: bool = True, limit: int | None = None
    ) -> None:
        self.capabilities = capabilities
        self.accept = accept
        self.limit = limit
        self.granted = 0
        self.written: list[Outgoing] = []
        self.closed = False
        self.aborted = False

    def write(self, out: Outgoing) -> bool:
        if not self.accept:
            return False
        if self.limit is not None and len(self.data()) + len(out.payload) > self.limit + self.granted:
            return False
        self.written.append(out)
        return True

    def grant(self, extra: int) -> None:
        self.granted += extra

    def quiet_until(self, now: float) -> float:
        return 0.0

    def is_stalled(self, now: float) -> bool:
        return False

    @property
    def stall_cause(self) -> str | None:
        return None

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True
        self.aborted = True

    @property
    def drained(self) -> bool:
        return True

    def data(self) -> bytes:
        return b"".join(out.payload for out in self.written)

    def json_records(self) -> list[dict[str, Any]]:
        return [json.loads(part) for part in self.data().split(b"\x1e")[:-1]]

    def msgpack_records(self) -> list[Any]:
        """MessagePack records after the JSON handshake reply (VarInt length prefixes, one byte here)."""
        data = self.data()
        handshake_end = data.index(b"\x1e") + 1
        records, rest = [], data[handshake_end:]
        while rest:
            length = rest[0]
            assert length < 0x80, "test records are short"
            records.append(msgpack.unpackb(rest[1 : 1 + length]))
            rest = rest[1 + length :]
        return records

    def clear(self) -> None:
        self.written.clear()


def make_principal(
    *,
    roles: Iterable[str] = ("Admin",),
    regions: Iterable[str] = (),
    contractor_id: str | None = None,
    expires_at: float | None = None,
    subject: str | None = None,
) -> Principal:
    return Principal(
        subject=subject or str(uuid.uuid4()),
        username=None,
        token_use="access",
        roles=frozenset(roles),
        regions=frozenset(regions),
        contractor_id=contractor_id,
        expires_at=time.time() + 3600 if expires_at is None else expires_at,
    )


class HubHarness:
    """One hub (the recommendations hub unless ``methods`` is given) with its manager and lifetime."""

    def __init__(
        self,
        *,
        methods: HubMethods | None = None,
        replay_cap: int = 100,
        resume_wait_seconds: float = 0.0,
        **options: Any,
    ) -> None:
        self.clock = ManualClock()
        self.lifetime = InMemoryHubLifetimeManager()
        self.history = History(
            max_entries=1000, max_bytes=1 << 20, max_age_seconds=600, clock=self.clock.wall_time
        )
        self.journal = EventJournal(
            self.lifetime,
            self.history,
            replay_cap=replay_cap,
            resume_wait_seconds=resume_wait_seconds,
            close_positioned=lambda reason: self.handler.close_positioned(reason),
        )
        self.handler = HubConnectionHandler(
            methods or HubMethods.of(RecommendationsHub(GroupPolicy(), self.journal)),
            options=HubOptions(**options),
            lifetime=self.lifetime,
            clock=HubClock(self.clock.monotonic, self.clock.wall_time),
        )
        self.manager = ConnectionManager(self.handler, disconnect_timeout=15, clock=self.clock.monotonic)

    async def connect(
        self,
        handshake: bytes = JSON_HANDSHAKE,
        *,
        sink: RecordingSink | None = None,
        stateful_reconnect: bool = False,
        principal: Principal | None = None,
        positions: bool = False,
    ) -> tuple[HttpConnection, RecordingSink]:
        sink = sink or RecordingSink()
        connection = self.manager.create(
            principal=principal or make_principal(),
            negotiate_version=1,
            stateful_reconnect=stateful_reconnect,
            positions=positions,
        )
        self.manager.attach(connection, Transport.WEBSOCKETS, sink)
        if handshake:
            await self.manager.receive(connection, handshake)
        return connection, sink

    async def send_json(self, connection: HttpConnection, *records: dict[str, Any]) -> None:
        await self.manager.receive(connection, b"".join(json.dumps(r).encode() + b"\x1e" for r in records))

    async def invoke(
        self, connection: HttpConnection, target: str, *args: object, invocation_id: str | None = "1"
    ) -> None:
        record: dict[str, Any] = {"type": 1, "target": target, "arguments": list(args)}
        if invocation_id is not None:
            record["invocationId"] = invocation_id
        await self.send_json(connection, record)

    def hub_connection(self, connection: HttpConnection) -> HubConnection:
        hub_connection = self.handler.get(connection.connection_id)
        assert hub_connection is not None
        return hub_connection

    def tick(self, seconds: float = 0.0) -> None:
        """Move the clock, then run one heartbeat (hub timers, then the manager's scan)."""
        self.clock.advance(seconds)
        self.handler.tick()
        self.manager.scan()
