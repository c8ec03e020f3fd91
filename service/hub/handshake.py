"""The first record of a hub connection: which hub protocol, and whether it can be resumed
(HubProtocol.md, "Overview" and "Stateful Reconnect"). No I/O: the connection acts on the answer."""

from __future__ import annotations

from dataclasses import dataclass

from service.connections import HttpConnection
from service.protocol import HubProtocol, parse_handshake_request, select_protocol

__all__ = ["Agreed", "read_handshake"]


@dataclass(frozen=True, slots=True)
class Agreed:
    protocol: HubProtocol
    resumable: bool
    remaining: bytes  # what the client sent after the handshake, for the protocol to read


def read_handshake(
    buffer: bytearray, connection: HttpConnection, max_message_size: int | None
) -> Agreed | None:
    """The handshake in ``buffer``, once whole (None until then); raises ``HandshakeError``."""
    parsed = parse_handshake_request(buffer, max_message_size)
    if parsed is None:
        return None
    request, consumed = parsed
    capabilities = connection.capabilities
    protocol = select_protocol(request, transfer_formats=capabilities.transfer_formats)
    # Stateful reconnect: negotiated with useStatefulReconnect, then a handshake of version 2 or
    # later, on a transport that can be resumed.
    resumable = connection.stateful_reconnect and request.version >= 2 and capabilities.resumable
    return Agreed(protocol, resumable, bytes(buffer[consumed:]))
