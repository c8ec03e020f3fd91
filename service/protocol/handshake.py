"""The SignalR handshake: parse the client's first record, choose the hub protocol, encode the reply.

Rule: the handshake is always one JSON text record terminated by 0x1E, whatever hub protocol it selects
(HubProtocol.md: "The handshake message is **always** a JSON message"). Only that record is consumed; the
bytes after it are already hub messages and belong to the protocol's reader. Every failure is a
`HandshakeError` whose `reply` is the exact text ASP.NET sends in ``{"error": ...}``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Final

import orjson

from service.protocol.errors import (
    HandshakeCanceledError,
    InvalidHandshakeError,
    UnsupportedProtocolError,
)
from service.protocol.framing import RECORD_SEPARATOR
from service.protocol.hub_protocol import HubProtocol, get_protocol
from service.protocol.messages import HandshakeRequest, TransferFormat

__all__ = [
    "HANDSHAKE_OK",
    "handshake_error_response",
    "parse_handshake_request",
    "select_protocol",
]

# HandshakeProtocol.cs: the success response is an empty object. It must not contain a `type` property
# (the JS client's HandshakeProtocol.ts rejects it) and must be a complete record.
HANDSHAKE_OK: Final = b"{}" + RECORD_SEPARATOR

_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


def parse_handshake_request(
    buffer: bytes | bytearray, max_size: int | None
) -> tuple[HandshakeRequest, int] | None:
    """Parse the handshake at the start of `buffer`.

    Returns the request and how many bytes it consumed (including the 0x1E), or None when the record is
    not complete yet. `max_size` is the hub's maximum message size (None: no limit); the record including
    its separator must fit into it. Raises HandshakeCanceledError when it cannot, InvalidHandshakeError when
    the record is not a handshake request.
    """
    # HubConnectionContext.HandshakeAsync looks for the record within the first MaximumReceiveMessageSize
    # bytes only; a longer record fails with "Handshake was canceled.".
    end = len(buffer) if max_size is None else max_size
    index = buffer.find(RECORD_SEPARATOR, 0, end)
    if index < 0:
        if max_size is not None and len(buffer) > max_size:
            raise HandshakeCanceledError()
        return None
    return _parse_request(memoryview(buffer)[:index]), index + 1


def _parse_request(payload: memoryview) -> HandshakeRequest:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidHandshakeError(f"Error reading JSON: {exc}") from exc
    if type(obj) is not dict:
        raise InvalidHandshakeError("Expected a JSON object.")
    # HandshakeProtocol.TryParseRequestMessage: unknown properties are skipped, order is free, a null
    # `protocol`/`version` counts as missing.
    protocol = _field(obj, "protocol")
    if type(protocol) is not str:
        raise InvalidHandshakeError("Expected 'protocol' to be of type String.")
    version = _field(obj, "version")
    if type(version) is not int:
        raise InvalidHandshakeError("Expected 'version' to be of type Number.")
    if not _INT32_MIN <= version <= _INT32_MAX:
        # .NET reads the version with ReadAsInt32.
        raise InvalidHandshakeError("Expected 'version' to be a 32-bit integer.")
    return HandshakeRequest(protocol, version)


def _field(obj: dict[str, Any], name: str) -> Any:
    value = obj.get(name)
    if value is None:
        raise InvalidHandshakeError(f"Missing required property '{name}'.")
    return value


def select_protocol(
    request: HandshakeRequest,
    *,
    transfer_formats: Collection[TransferFormat] = (TransferFormat.TEXT, TransferFormat.BINARY),
    enabled: Collection[str] | None = None,
) -> HubProtocol:
    """The hub protocol for `request`, checked like HubConnectionContext.HandshakeAsync does.

    `transfer_formats` are what the current transport can carry (SSE: TEXT only); `enabled` optionally
    restricts the protocol names (HubOptions.SupportedProtocols). Raises UnsupportedProtocolError with the
    exact ASP.NET reply text.
    """
    protocol = get_protocol(request.protocol)
    if protocol is None or (enabled is not None and protocol.name not in enabled):
        raise UnsupportedProtocolError(f"The protocol '{request.protocol}' is not supported.")
    if not protocol.is_version_supported(request.version):
        raise UnsupportedProtocolError(
            f"The server does not support version {request.version} of the '{protocol.name}' protocol."
        )
    if protocol.transfer_format not in transfer_formats:
        raise UnsupportedProtocolError(
            f"Cannot use the '{protocol.name}' protocol on the current transport. "
            f"The transport does not support '{protocol.transfer_format.wire_name}' transfer format."
        )
    return protocol


def handshake_error_response(reply: str) -> bytes:
    """The failed-handshake record ``{"error":"<reply>"}`` + 0x1E (valid JSON whatever `reply` holds)."""
    return orjson.dumps({"error": reply}) + RECORD_SEPARATOR
