"""Sans-I/O implementation of the ASP.NET Core SignalR wire protocol: negotiate, handshake, hub messages.

Rule: no I/O, no asyncio, no aiohttp -- only stdlib, orjson and msgpack. Everything here turns bytes into
typed values and typed values into bytes; transports move the bytes and the hub decides what to do.
Malformed input from a peer only ever raises a `ProtocolError` subclass.

Specifications: ASP.NET Core SignalR's ``HubProtocol.md`` and ``TransportProtocols.md``
(https://github.com/dotnet/aspnetcore/tree/main/src/SignalR/docs/specs); where they are silent, the
behaviour of ASP.NET's own sources (``JsonHubProtocol.cs``, ``HandshakeProtocol.cs``, ...), named
where it matters.
"""

from __future__ import annotations

from service.protocol.errors import (
    HandshakeCanceledError,
    HandshakeError,
    InvalidHandshakeError,
    InvalidMessageError,
    MessageTooLargeError,
    NegotiateError,
    ProtocolError,
    UnsupportedProtocolError,
)
from service.protocol.framing import (
    RECORD_SEPARATOR,
    BinaryRecordReader,
    TextRecordReader,
    write_binary_record,
    write_text_record,
    write_varint,
)
from service.protocol.handshake import (
    HANDSHAKE_OK,
    handshake_error_response,
    parse_handshake_request,
    select_protocol,
)
from service.protocol.hub_protocol import (
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    SUPPORTED_PROTOCOLS,
    HubProtocol,
    MessageReader,
    get_protocol,
)
from service.protocol.json_protocol import JsonHubProtocol
from service.protocol.messages import (
    EMPTY_HEADERS,
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HandshakeRequest,
    HubInvocationMessage,
    HubMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
    is_trackable,
)
from service.protocol.msgpack_protocol import MessagePackHubProtocol
from service.protocol.negotiate import (
    DEFAULT_TRANSPORTS,
    LONG_POLLING,
    SERVER_SENT_EVENTS,
    TRANSFER_FORMATS,
    WEBSOCKETS,
    AvailableTransport,
    negotiate_error_response,
    negotiate_response,
    new_connection_id,
    parse_bool_query,
    parse_negotiate_version,
)

__all__ = [
    "DEFAULT_TRANSPORTS",
    "EMPTY_HEADERS",
    "HANDSHAKE_OK",
    "JSON_PROTOCOL",
    "LONG_POLLING",
    "MESSAGEPACK_PROTOCOL",
    "PING",
    "RECORD_SEPARATOR",
    "SERVER_SENT_EVENTS",
    "SUPPORTED_PROTOCOLS",
    "TRANSFER_FORMATS",
    "WEBSOCKETS",
    "AckMessage",
    "AvailableTransport",
    "BinaryRecordReader",
    "CancelInvocationMessage",
    "CloseMessage",
    "CompletionMessage",
    "HandshakeCanceledError",
    "HandshakeError",
    "HandshakeRequest",
    "HubInvocationMessage",
    "HubMessage",
    "HubProtocol",
    "InvalidHandshakeError",
    "InvalidMessageError",
    "InvocationMessage",
    "JsonHubProtocol",
    "MessagePackHubProtocol",
    "MessageReader",
    "MessageTooLargeError",
    "MessageType",
    "NegotiateError",
    "PingMessage",
    "ProtocolError",
    "SequenceMessage",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "TextRecordReader",
    "TransferFormat",
    "UnsupportedProtocolError",
    "get_protocol",
    "handshake_error_response",
    "is_trackable",
    "negotiate_error_response",
    "negotiate_response",
    "new_connection_id",
    "parse_bool_query",
    "parse_handshake_request",
    "parse_negotiate_version",
    "select_protocol",
    "write_binary_record",
    "write_text_record",
    "write_varint",
]
