"""A hub connection's start and end as operators see them: the connection gauges and counters, and
the ``connection.connected`` / ``connection.closed`` lines (under the connection's logger)."""

from __future__ import annotations

import structlog

from service.connections import HttpConnection
from service.metrics import CONNECTIONS, CONNECTIONS_CLOSED, CONNECTIONS_OPENED
from service.protocol import HubProtocol

__all__ = ["announce_closed", "announce_connected"]

log = structlog.get_logger("service.hub.connection")


def announce_connected(connection: HttpConnection, protocol: HubProtocol) -> None:
    transport = connection.transport.value if connection.transport else "none"
    CONNECTIONS.labels(transport, protocol.name).inc()
    CONNECTIONS_OPENED.labels(transport, protocol.name).inc()
    log.info(
        "connection.connected",
        transport=transport,
        protocol=protocol.name,
        subject=connection.principal.subject,
        statefulReconnect=connection.resumable,
    )


def announce_closed(connection: HttpConnection, protocol: HubProtocol | None) -> None:
    """Whoever ended it, for the reason it keeps; the gauge counted it only once it had a protocol."""
    reason = connection.close_reason or "transport_closed"
    if protocol is not None:
        transport = connection.transport.value if connection.transport else "none"
        CONNECTIONS.labels(transport, protocol.name).dec()
    CONNECTIONS_CLOSED.labels(reason).inc()
    log.info("connection.closed", connectionId=connection.connection_id, reason=reason)
