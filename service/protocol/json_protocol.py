"""The JSON hub protocol ("json", version 2, text): hub messages as JSON objects terminated by 0x1E.

Rule: read like the .NET server, write like the .NET server. Reading is lenient where ASP.NET is lenient
(property order is free, unknown properties are ignored, ``invocationId: ""`` means non-blocking,
``"error": null`` means no error) and strict where it is strict (a missing ``type`` or required field closes
the connection). Every malformed record raises `InvalidMessageError` and nothing else. Writing emits exactly
the properties ASP.NET's JsonHubProtocol writes, in its order, because some clients (pysignalr) crash on
any property they do not know.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import orjson

from service.protocol._reader import FramedMessageReader
from service.protocol.errors import InvalidMessageError
from service.protocol.framing import RECORD_SEPARATOR, TextRecordReader
from service.protocol.messages import (
    EMPTY_HEADERS,
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvocationMessage,
    MessageType,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
)

__all__ = ["JsonHubProtocol", "parse_json_payload"]

_MISSING: Final = object()
_MAX_INT64: Final = 2**63 - 1

# HubProtocol.md, "Ping Message Encoding": {"type": 6}. Sent every 15 s to every connection: encode once.
_PING_RECORD: Final = b'{"type":6}' + RECORD_SEPARATOR

# Plain ints for the writers: orjson would serialize the IntEnum too, just more slowly.
_INVOCATION: Final = int(MessageType.INVOCATION)
_STREAM_ITEM: Final = int(MessageType.STREAM_ITEM)
_COMPLETION: Final = int(MessageType.COMPLETION)
_STREAM_INVOCATION: Final = int(MessageType.STREAM_INVOCATION)
_CANCEL_INVOCATION: Final = int(MessageType.CANCEL_INVOCATION)
_CLOSE: Final = int(MessageType.CLOSE)
_ACK: Final = int(MessageType.ACK)
_SEQUENCE: Final = int(MessageType.SEQUENCE)

# UTC datetimes as "2000-01-01T00:00:00Z", the way System.Text.Json writes a UTC DateTime.
_DUMPS_OPTIONS: Final = orjson.OPT_UTC_Z

JsonObject = dict[str, Any]


# ---------------------------------------------------------------------------------------------------------
# Reading. Each helper validates one property and raises InvalidMessageError with .NET's wording.
# ---------------------------------------------------------------------------------------------------------


def _optional_string(obj: JsonObject, name: str) -> str | None:
    value = obj.get(name)
    if value is None or type(value) is str:
        return value
    # SystemTextJsonExtensions.ReadAsString: a non-null, non-string token is rejected.
    raise InvalidMessageError(f"Expected '{name}' to be of type String.")


def _required_invocation_id(obj: JsonObject) -> str:
    invocation_id = _optional_string(obj, "invocationId")
    if not invocation_id:
        # JsonHubProtocol.cs: string.IsNullOrEmpty(invocationId) -> "Missing required property ...".
        raise InvalidMessageError("Missing required property 'invocationId'.")
    return invocation_id


def _target(obj: JsonObject) -> str:
    target = _optional_string(obj, "target")
    if not target:
        raise InvalidMessageError("Missing required property 'target'.")
    return target


def _arguments(obj: JsonObject) -> tuple[Any, ...]:
    arguments = obj.get("arguments", _MISSING)
    if arguments is _MISSING:
        raise InvalidMessageError("Missing required property 'arguments'.")
    if type(arguments) is not list:
        raise InvalidMessageError("Expected 'arguments' to be of type Array.")
    return tuple(arguments)


def _stream_ids(obj: JsonObject) -> tuple[str, ...]:
    stream_ids = obj.get("streamIds", _MISSING)
    if stream_ids is _MISSING:
        return ()
    if type(stream_ids) is not list:
        raise InvalidMessageError("Expected 'streamIds' to be of type Array.")
    # The Java client and pysignalr send "streamIds": [] -- an empty array is fine.
    if not all(type(stream_id) is str for stream_id in stream_ids):
        raise InvalidMessageError("Expected 'streamIds' to contain only strings.")
    return tuple(stream_ids)


def _headers(obj: JsonObject) -> Mapping[str, str]:
    headers = obj.get("headers", _MISSING)
    if headers is _MISSING:
        return EMPTY_HEADERS
    if type(headers) is not dict:
        raise InvalidMessageError("Expected 'headers' to be of type Object.")
    if not headers:
        return EMPTY_HEADERS
    # HubProtocol.md: "Message headers are encoded into a JSON object, with string values". pysignalr puts its
    # HTTP headers here; they are carried along untouched (and may hold secrets: never log them).
    for name, value in headers.items():
        if type(value) is not str:
            raise InvalidMessageError(f"Expected header '{name}' to be of type String.")
    return MappingProxyType(headers)


def _sequence_id(obj: JsonObject) -> int:
    sequence_id = obj.get("sequenceId", _MISSING)
    if sequence_id is _MISSING:
        raise InvalidMessageError("Missing required property 'sequenceId'.")
    # .NET reads it as Int64; ids start at 1, so a negative one can only be garbage.
    if type(sequence_id) is not int or not 0 <= sequence_id <= _MAX_INT64:
        raise InvalidMessageError("Expected 'sequenceId' to be a non-negative 64-bit integer.")
    return sequence_id


def _read_invocation(obj: JsonObject) -> InvocationMessage:
    # HubProtocol.md, "Non-Blocking Invocations"; JsonHubProtocol.cs also reads `null` and `""` as absent.
    invocation_id = _optional_string(obj, "invocationId") or None
    return InvocationMessage(_target(obj), _arguments(obj), invocation_id, _headers(obj), _stream_ids(obj))


def _read_stream_invocation(obj: JsonObject) -> StreamInvocationMessage:
    return StreamInvocationMessage(
        _required_invocation_id(obj), _target(obj), _arguments(obj), _headers(obj), _stream_ids(obj)
    )


def _read_stream_item(obj: JsonObject) -> StreamItemMessage:
    invocation_id = _required_invocation_id(obj)
    item = obj.get("item", _MISSING)
    if item is _MISSING:
        # HubProtocol.md: StreamItem has "`item` - A `Token` encoding the stream item"; null is a valid token.
        raise InvalidMessageError("Missing required property 'item'.")
    return StreamItemMessage(invocation_id, item, _headers(obj))


def _read_completion(obj: JsonObject) -> CompletionMessage:
    invocation_id = _required_invocation_id(obj)
    # JsonHubProtocol.cs treats `"error": null` as no error (signalrcore sends it on every completion).
    error = _optional_string(obj, "error")
    # JsonHubProtocol.cs: hasResult is set whenever the property is present, even as `null`.
    has_result = "result" in obj
    if error is not None and has_result:
        # HubProtocol.md: "It is a protocol error to include both a `result` and an `error` property".
        raise InvalidMessageError("The 'error' and 'result' properties are mutually exclusive.")
    return CompletionMessage(invocation_id, error, obj.get("result"), has_result, _headers(obj))


def _read_cancel_invocation(obj: JsonObject) -> CancelInvocationMessage:
    return CancelInvocationMessage(_required_invocation_id(obj), _headers(obj))


def _read_ping(obj: JsonObject) -> PingMessage:
    return PING


def _read_close(obj: JsonObject) -> CloseMessage:
    error = _optional_string(obj, "error")
    allow_reconnect = obj.get("allowReconnect", False)
    if type(allow_reconnect) is not bool:
        raise InvalidMessageError("Expected 'allowReconnect' to be of type Boolean.")
    return CloseMessage(error, allow_reconnect)


def _read_ack(obj: JsonObject) -> AckMessage:
    return AckMessage(_sequence_id(obj))


def _read_sequence(obj: JsonObject) -> SequenceMessage:
    return SequenceMessage(_sequence_id(obj))


_READERS: Final[Mapping[int, Callable[[JsonObject], HubMessage]]] = {
    MessageType.INVOCATION: _read_invocation,
    MessageType.STREAM_ITEM: _read_stream_item,
    MessageType.COMPLETION: _read_completion,
    MessageType.STREAM_INVOCATION: _read_stream_invocation,
    MessageType.CANCEL_INVOCATION: _read_cancel_invocation,
    MessageType.PING: _read_ping,
    MessageType.CLOSE: _read_close,
    MessageType.ACK: _read_ack,
    MessageType.SEQUENCE: _read_sequence,
}


def parse_json_payload(payload: bytes) -> HubMessage | None:
    """Decode one record (without its 0x1E); None for a message type this server does not know."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # Invalid UTF-8, bad syntax, nesting deeper than 1024, numbers overflowing a double all land here.
        # (Integer literals beyond 64 bits do not: orjson reads them as floats, which the binder may reject.)
        raise InvalidMessageError(f"Error reading JSON: {exc}") from exc
    if type(obj) is not dict:
        raise InvalidMessageError("Expected a JSON object.")
    # Property order is not guaranteed (the JS client writes `type` last; JsonHubProtocol.cs reads any
    # order) -- orjson has already parsed the whole object, so we simply look the properties up.
    message_type = obj.get("type", _MISSING)
    if message_type is _MISSING:
        raise InvalidMessageError("Missing required property 'type'.")
    if type(message_type) is not int:
        raise InvalidMessageError("Expected 'type' to be an integer Number.")
    read = _READERS.get(message_type)
    if read is None:
        # JsonHubProtocol.cs: "Future protocol changes can add message types, old clients can ignore them".
        return None
    return read(obj)


# ---------------------------------------------------------------------------------------------------------
# Writing: JsonHubProtocol.WriteMessageCore order -- `type` first, `headers` only if non-empty, then fields.
# ---------------------------------------------------------------------------------------------------------


def _start(message_type: int, headers: Mapping[str, str]) -> JsonObject:
    obj: JsonObject = {"type": message_type}
    if headers:
        obj["headers"] = headers if type(headers) is dict else dict(headers)
    return obj


def _write_invocation(message: InvocationMessage) -> JsonObject:
    obj = _start(_INVOCATION, message.headers)
    if message.invocation_id:
        obj["invocationId"] = message.invocation_id
    obj["target"] = message.target
    obj["arguments"] = message.arguments
    if message.stream_ids:
        obj["streamIds"] = message.stream_ids
    return obj


def _write_stream_invocation(message: StreamInvocationMessage) -> JsonObject:
    obj = _start(_STREAM_INVOCATION, message.headers)
    obj["invocationId"] = message.invocation_id
    obj["target"] = message.target
    obj["arguments"] = message.arguments
    if message.stream_ids:
        obj["streamIds"] = message.stream_ids
    return obj


def _write_stream_item(message: StreamItemMessage) -> JsonObject:
    obj = _start(_STREAM_ITEM, message.headers)
    obj["invocationId"] = message.invocation_id
    obj["item"] = message.item
    return obj


def _write_completion(message: CompletionMessage) -> JsonObject:
    obj = _start(_COMPLETION, message.headers)
    obj["invocationId"] = message.invocation_id
    # JsonHubProtocol.WriteCompletionMessage: `error` if non-empty, else `result` if HasResult (a None result
    # is written as "result":null), else neither (void method, finished stream).
    if message.error:
        obj["error"] = message.error
    elif message.has_result:
        obj["result"] = message.result
    return obj


def _write_cancel_invocation(message: CancelInvocationMessage) -> JsonObject:
    obj = _start(_CANCEL_INVOCATION, message.headers)
    obj["invocationId"] = message.invocation_id
    return obj


def _write_close(message: CloseMessage) -> JsonObject:
    obj: JsonObject = {"type": _CLOSE}
    if message.error is not None:
        obj["error"] = message.error
    # JsonHubProtocol.WriteCloseMessage writes allowReconnect only when true.
    if message.allow_reconnect:
        obj["allowReconnect"] = True
    return obj


def _write_ack(message: AckMessage) -> JsonObject:
    return {"type": _ACK, "sequenceId": message.sequence_id}


def _write_sequence(message: SequenceMessage) -> JsonObject:
    return {"type": _SEQUENCE, "sequenceId": message.sequence_id}


_WRITERS: Final[Mapping[type, Callable[[Any], JsonObject]]] = {
    InvocationMessage: _write_invocation,
    StreamInvocationMessage: _write_stream_invocation,
    StreamItemMessage: _write_stream_item,
    CompletionMessage: _write_completion,
    CancelInvocationMessage: _write_cancel_invocation,
    CloseMessage: _write_close,
    AckMessage: _write_ack,
    SequenceMessage: _write_sequence,
}


class JsonHubProtocol:
    """The ``json`` hub protocol. Stateless: one instance serves every connection."""

    __slots__ = ()

    name: Final = "json"
    # JsonHubProtocol.cs reports Version = 2 (stateful reconnect clients handshake with version 2).
    version: Final = 2
    transfer_format: Final = TransferFormat.TEXT

    def is_version_supported(self, version: int) -> bool:
        """ASP.NET accepts any handshake version up to its own (``version <= Version``)."""
        return version <= self.version

    def new_reader(self, max_message_size: int | None) -> FramedMessageReader:
        """A reader for one connection's inbound stream; the limit counts the 0x1E (None: no limit)."""
        return FramedMessageReader(TextRecordReader(max_message_size), parse_json_payload)

    def parse_payload(self, payload: bytes) -> HubMessage | None:
        """Decode a single record without its separator; None for unknown message types."""
        return parse_json_payload(payload)

    def write(self, message: HubMessage) -> bytes:
        """Encode `message` as one complete record (compact UTF-8 JSON + 0x1E).

        Raises TypeError when a payload value cannot be represented in JSON: that is a server bug, not a
        protocol error.
        """
        if type(message) is PingMessage:
            return _PING_RECORD
        writer = _WRITERS.get(type(message))
        if writer is None:
            raise TypeError(f"Cannot write {type(message).__name__}: not a hub message.")
        # orjson writes compact JSON with non-ASCII as raw UTF-8, like .NET's relaxed escaping. It raises
        # orjson.JSONEncodeError (a TypeError) for values it cannot serialize.
        return orjson.dumps(writer(message), option=_DUMPS_OPTIONS) + RECORD_SEPARATOR
