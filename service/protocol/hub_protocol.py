"""The hub-protocol interface the hub codes against, and the registry of the protocols this server speaks.

Rule: the hub never imports a concrete protocol. It resolves one by the name the client sent in its
handshake (`get_protocol`), asks it for a per-connection `MessageReader`, and calls `write` to get complete,
framed records -- once per protocol for a broadcast, then the same bytes go to every member.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Protocol

from service.protocol.json_protocol import JsonHubProtocol
from service.protocol.messages import HubMessage, TransferFormat
from service.protocol.msgpack_protocol import MessagePackHubProtocol

__all__ = ["SUPPORTED_PROTOCOLS", "HubProtocol", "MessageReader", "get_protocol"]


class MessageReader(Protocol):
    """One connection's inbound decoder: `feed` transport bytes, then drain `next_message` until None."""

    @property
    def buffered_size(self) -> int:
        """Bytes received but not yet turned into messages."""
        ...

    def feed(self, data: bytes) -> None:
        """Append received bytes; transport frame boundaries are irrelevant."""
        ...

    def next_message(self) -> HubMessage | None:
        """The next message, or None for "need more data". Unknown message types are skipped silently.

        Raises a `ProtocolError` subclass (InvalidMessageError, MessageTooLargeError) on bad input.
        """
        ...


class HubProtocol(Protocol):
    """A hub protocol (JSON or MessagePack): names itself, reads records, writes framed records."""

    @property
    def name(self) -> str:
        """The name clients put in the handshake: ``"json"`` or ``"messagepack"``."""
        ...

    @property
    def version(self) -> int:
        """The highest handshake version understood (2, like ASP.NET)."""
        ...

    @property
    def transfer_format(self) -> TransferFormat:
        """TEXT for JSON, BINARY for MessagePack; decides WebSocket frame type and SSE eligibility."""
        ...

    def is_version_supported(self, version: int) -> bool:
        """Whether a handshake asking for `version` is accepted."""
        ...

    def new_reader(self, max_message_size: int | None) -> MessageReader:
        """A fresh reader for one connection; records over `max_message_size` bytes are rejected."""
        ...

    def write(self, message: HubMessage) -> bytes:
        """One complete, framed record for `message` (raises TypeError for unserializable payloads)."""
        ...


JSON_PROTOCOL = JsonHubProtocol()
MESSAGEPACK_PROTOCOL = MessagePackHubProtocol()

SUPPORTED_PROTOCOLS: Mapping[str, HubProtocol] = MappingProxyType(
    {JSON_PROTOCOL.name: JSON_PROTOCOL, MESSAGEPACK_PROTOCOL.name: MESSAGEPACK_PROTOCOL}
)


def get_protocol(name: str) -> HubProtocol | None:
    """The protocol called `name`, or None. Like ASP.NET (StringComparer.OrdinalIgnoreCase), ASCII case is
    ignored: ``"JSON"`` finds the json protocol."""
    protocol = SUPPORTED_PROTOCOLS.get(name)
    if protocol is None and name.isascii():
        protocol = SUPPORTED_PROTOCOLS.get(name.lower())
    return protocol
