"""The MessagePack hub protocol ("messagepack", version 2, binary): each message is a MessagePack array
framed by a VarInt length prefix.

Rule: positional layouts exactly as HubProtocol.md gives them. Reading tolerates *more* array elements than
expected (future additions) and the optional trailing elements older clients omit (JS sends 5-element
Invocations and ``[7, nil]`` Closes); fewer than required, or a wrong type, is an `InvalidMessageError`, and
so is every error msgpack itself can raise. Writing emits the layouts ASP.NET's MessagePackHubProtocolWorker
emits (6-element Invocations with ``[]`` stream ids, 3-element Closes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

import msgpack

from service.protocol._reader import FramedMessageReader
from service.protocol.errors import InvalidMessageError
from service.protocol.framing import BinaryRecordReader, write_binary_record
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

__all__ = ["MessagePackHubProtocol", "parse_msgpack_payload"]

_MAX_INT64: Final = 2**63 - 1

# HubProtocol.md, Completion: "ResultKind - A flag indicating the invocation result kind".
_ERROR_RESULT: Final = 1
_VOID_RESULT: Final = 2
_NON_VOID_RESULT: Final = 3

# HubProtocol.md: "The Ping message is **always exactly encoded** as `0x91 0x06`" -- plus its VarInt length.
_PING_RECORD: Final = write_binary_record(b"\x91\x06")

# Everything msgpack.unpackb can raise on hostile input: truncated data (ValueError), trailing bytes
# (ExtraData), reserved bytes (FormatError), nesting (StackError), invalid UTF-8 (UnicodeDecodeError),
# unhashable map keys (TypeError), out-of-range timestamps (ValueError/OverflowError).
_UNPACK_ERRORS: Final = (ValueError, TypeError, OverflowError, msgpack.UnpackException)
# ... and msgpack.packb on values it cannot represent: TypeError (unknown type), OverflowError (int beyond
# 64 bits), ValueError (naive datetime, lone surrogates).
_PACK_ERRORS: Final = (TypeError, ValueError, OverflowError)

Items = list[Any]


# ---------------------------------------------------------------------------------------------------------
# Reading. Messages follow MessagePackHubProtocolWorker.cs; error texts follow its InvalidDataExceptions.
# ---------------------------------------------------------------------------------------------------------


def _require(items: Items, count: int, name: str) -> None:
    # MessagePackHubProtocol.ts: "check minimum length to allow protocol to add items to the end of objects
    # in future releases" -- more elements are fine, fewer are not.
    if len(items) < count:
        raise InvalidMessageError(
            f"Invalid payload for {name} message: expected at least {count} elements, got {len(items)}."
        )


def _headers(value: Any) -> Mapping[str, str]:
    # HubProtocol.md: "Headers are encoded in MessagePack messages as a Map that immediately follows the type
    # value. [...] both the keys and values must be String values."
    if type(value) is not dict:
        raise InvalidMessageError("Reading map length for 'headers' failed.")
    if not value:
        return EMPTY_HEADERS
    for name, header in value.items():
        if type(name) is not str or type(header) is not str:
            raise InvalidMessageError("Expected headers to map strings to strings.")
    return MappingProxyType(value)


def _optional_string(value: Any, name: str) -> str | None:
    if value is None or type(value) is str:
        return value
    raise InvalidMessageError(f"Reading '{name}' as String failed.")


def _required_invocation_id(value: Any, name: str) -> str:
    invocation_id = _optional_string(value, "invocationId")
    if not invocation_id:
        raise InvalidMessageError(f"Null or empty invocation ID for {name} message.")
    return invocation_id


def _target(value: Any, name: str) -> str:
    target = _optional_string(value, "target")
    if not target:
        raise InvalidMessageError(f"Null or empty target for {name} message.")
    return target


def _arguments(value: Any) -> tuple[Any, ...]:
    if type(value) is not list:
        raise InvalidMessageError("Reading array length for 'arguments' failed.")
    return tuple(value)


def _stream_ids(items: Items) -> tuple[str, ...]:
    # MessagePackHubProtocolWorker.cs: "Previous clients will send 5 items, so we check if they sent a stream
    # array or not".
    if len(items) <= 5:
        return ()
    stream_ids = items[5]
    if type(stream_ids) is not list:
        raise InvalidMessageError("Reading array length for 'streamIds' failed.")
    if not all(type(stream_id) is str and stream_id for stream_id in stream_ids):
        raise InvalidMessageError("Null or empty value in streamIds received.")
    return tuple(stream_ids)


def _sequence_id(value: Any) -> int:
    # HubProtocol.md, Ack: "8-bit unsigned int (any unsigned int size is fine)"; .NET reads it as Int64.
    if type(value) is not int or not 0 <= value <= _MAX_INT64:
        raise InvalidMessageError("Reading 'sequenceId' as a non-negative Int64 failed.")
    return value


def _read_invocation(items: Items) -> InvocationMessage:
    # [1, Headers, InvocationId, Target, [Arguments], [StreamIds]?]
    _require(items, 5, "Invocation")
    headers = _headers(items[1])
    # MessagePackHubProtocolWorker.cs: "we represent an empty invocation ID as an empty string, so we need
    # to normalize that to "null", which is what indicates a non-blocking invocation."
    invocation_id = _optional_string(items[2], "invocationId") or None
    target = _target(items[3], "Invocation")
    return InvocationMessage(target, _arguments(items[4]), invocation_id, headers, _stream_ids(items))


def _read_stream_invocation(items: Items) -> StreamInvocationMessage:
    # [4, Headers, InvocationId, Target, [Arguments], [StreamIds]?]
    _require(items, 5, "StreamInvocation")
    headers = _headers(items[1])
    invocation_id = _required_invocation_id(items[2], "StreamInvocation")
    target = _target(items[3], "StreamInvocation")
    return StreamInvocationMessage(invocation_id, target, _arguments(items[4]), headers, _stream_ids(items))


def _read_stream_item(items: Items) -> StreamItemMessage:
    # [2, Headers, InvocationId, Item]
    _require(items, 4, "StreamItem")
    headers = _headers(items[1])
    return StreamItemMessage(_required_invocation_id(items[2], "StreamItem"), items[3], headers)


def _read_completion(items: Items) -> CompletionMessage:
    # [3, Headers, InvocationId, ResultKind, Result?]
    _require(items, 4, "Completion")
    headers = _headers(items[1])
    invocation_id = _required_invocation_id(items[2], "Completion")
    result_kind = items[3]
    if type(result_kind) is not int:
        raise InvalidMessageError("Reading 'resultKind' as Int32 failed.")
    if result_kind == _VOID_RESULT:
        # HubProtocol.md: "`2` - Void result - Result is absent".
        return CompletionMessage(invocation_id, headers=headers)
    if result_kind == _ERROR_RESULT:
        _require(items, 5, "Completion")
        error = items[4]
        if type(error) is not str:
            raise InvalidMessageError("Reading 'error' as String failed.")
        return CompletionMessage(invocation_id, error=error, headers=headers)
    if result_kind == _NON_VOID_RESULT:
        _require(items, 5, "Completion")
        return CompletionMessage(invocation_id, result=items[4], has_result=True, headers=headers)
    raise InvalidMessageError("Invalid invocation result kind.")


def _read_cancel_invocation(items: Items) -> CancelInvocationMessage:
    # [5, Headers, InvocationId]
    _require(items, 3, "CancelInvocation")
    headers = _headers(items[1])
    return CancelInvocationMessage(_required_invocation_id(items[2], "CancelInvocation"), headers)


def _read_ping(items: Items) -> PingMessage:
    return PING


def _read_close(items: Items) -> CloseMessage:
    # [7, Error, AllowReconnect?] -- the JS client writes [7, nil].
    _require(items, 2, "Close")
    error = _optional_string(items[1], "error")
    allow_reconnect = False
    if len(items) > 2:
        allow_reconnect = items[2]
        if type(allow_reconnect) is not bool:
            raise InvalidMessageError("Reading 'allowReconnect' as Boolean failed.")
    return CloseMessage(error, allow_reconnect)


def _read_ack(items: Items) -> AckMessage:
    # [8, SequenceId]
    _require(items, 2, "Ack")
    return AckMessage(_sequence_id(items[1]))


def _read_sequence(items: Items) -> SequenceMessage:
    # [9, SequenceId]
    _require(items, 2, "Sequence")
    return SequenceMessage(_sequence_id(items[1]))


_READERS: Final[Mapping[int, Callable[[Items], HubMessage]]] = {
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


_TIMESTAMP_TYPE: Final = b"\xff"


def _datetime_or_same(value: Any) -> Any:
    # OverflowError/ValueError beyond datetime's range: an invalid message.
    return value.to_datetime() if type(value) is msgpack.Timestamp else value


def _datetimes_in_array(items: list[Any]) -> list[Any]:
    return [_datetime_or_same(item) for item in items]


def _datetimes_in_map(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    return {_datetime_or_same(key): _datetime_or_same(value) for key, value in pairs}


def parse_msgpack_payload(payload: bytes) -> HubMessage | None:
    """Decode one record (without its length prefix); None for a message type this server does not know."""
    try:
        # strict_map_key=False: payload maps (objects) may have non-string keys, e.g. Dictionary<int, T>.
        if _TIMESTAMP_TYPE not in payload:  # no 0xff byte, no Timestamp extension (-1)
            items = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        else:
            # The Timestamp extension (what .NET writes for DateTime) is read as a msgpack.Timestamp,
            # which refuses nanoseconds over 999,999,999 as the msgpack spec asks (timestamp=3 does
            # not check them), and the hooks make it an aware datetime as each array or map is read:
            # no recursion of ours, however deep the payload nests.
            items = msgpack.unpackb(
                payload,
                raw=False,
                strict_map_key=False,
                timestamp=0,
                list_hook=_datetimes_in_array,
                object_pairs_hook=_datetimes_in_map,
            )
    except _UNPACK_ERRORS as exc:
        raise InvalidMessageError(f"Error reading MessagePack: {str(exc) or type(exc).__name__}") from exc
    # HubProtocol.md: "each Message is represented as a single MsgPack array".
    if type(items) is not list:
        raise InvalidMessageError("Expected a MessagePack array.")
    if not items or type(items[0]) is not int:
        raise InvalidMessageError("Reading 'messageType' as Int32 failed.")
    read = _READERS.get(items[0])
    if read is None:
        # MessagePackHubProtocolWorker.cs: "Future protocol changes can add message types, old clients can
        # ignore them".
        return None
    return read(items)


# ---------------------------------------------------------------------------------------------------------
# Writing: MessagePackHubProtocolWorker.WriteMessageCore layouts.
# ---------------------------------------------------------------------------------------------------------


def _packable_headers(headers: Mapping[str, str]) -> Mapping[str, str]:
    # msgpack packs dicts only; an empty (shared, read-only) mapping becomes the empty map 0x80.
    if not headers:
        return {}
    return headers if type(headers) is dict else dict(headers)


def _items_invocation(message: InvocationMessage) -> Items:
    # MessagePackHubProtocolWorker.WriteInvocationMessage: nil for no id, always 6 elements.
    return [
        1,
        _packable_headers(message.headers),
        message.invocation_id or None,
        message.target,
        message.arguments,
        message.stream_ids,
    ]


def _items_stream_invocation(message: StreamInvocationMessage) -> Items:
    return [
        4,
        _packable_headers(message.headers),
        message.invocation_id,
        message.target,
        message.arguments,
        message.stream_ids,
    ]


def _items_stream_item(message: StreamItemMessage) -> Items:
    return [2, _packable_headers(message.headers), message.invocation_id, message.item]


def _items_completion(message: CompletionMessage) -> Items:
    headers = _packable_headers(message.headers)
    # MessagePackHubProtocolWorker.WriteCompletionMessage: Error != null ? Error : HasResult ? NonVoid : Void.
    if message.error is not None:
        return [3, headers, message.invocation_id, _ERROR_RESULT, message.error]
    if message.has_result:
        return [3, headers, message.invocation_id, _NON_VOID_RESULT, message.result]
    return [3, headers, message.invocation_id, _VOID_RESULT]


def _items_cancel_invocation(message: CancelInvocationMessage) -> Items:
    return [5, _packable_headers(message.headers), message.invocation_id]


def _items_close(message: CloseMessage) -> Items:
    # MessagePackHubProtocolWorker.WriteCloseMessage: 3 elements; nil when the error is null or empty.
    return [7, message.error or None, message.allow_reconnect]


def _items_ack(message: AckMessage) -> Items:
    return [8, message.sequence_id]


def _items_sequence(message: SequenceMessage) -> Items:
    return [9, message.sequence_id]


_WRITERS: Final[Mapping[type, Callable[[Any], Items]]] = {
    InvocationMessage: _items_invocation,
    StreamInvocationMessage: _items_stream_invocation,
    StreamItemMessage: _items_stream_item,
    CompletionMessage: _items_completion,
    CancelInvocationMessage: _items_cancel_invocation,
    CloseMessage: _items_close,
    AckMessage: _items_ack,
    SequenceMessage: _items_sequence,
}


class MessagePackHubProtocol:
    """The ``messagepack`` hub protocol. One instance serves every connection.

    It keeps one reusable msgpack Packer (about twice as fast as ``msgpack.packb``). Packing holds the GIL
    from start to end and the Packer resets itself after an error, so sharing it is safe.
    """

    __slots__ = ("_packer",)

    name: Final = "messagepack"
    # MessagePackHubProtocol.cs reports Version = 2.
    version: Final = 2
    transfer_format: Final = TransferFormat.BINARY

    def __init__(self) -> None:
        # use_bin_type: bytes -> bin (JS Uint8Array, .NET byte[]); datetime: aware datetimes -> Timestamp
        # extension -1, which .NET reads as DateTime and JS as Date.
        self._packer = msgpack.Packer(use_bin_type=True, datetime=True, autoreset=True)

    def is_version_supported(self, version: int) -> bool:
        """ASP.NET accepts any handshake version up to its own (``version <= Version``)."""
        return version <= self.version

    def new_reader(self, max_message_size: int | None) -> FramedMessageReader:
        """A reader for one connection's inbound stream; the limit counts prefix + payload (None: none)."""
        return FramedMessageReader(BinaryRecordReader(max_message_size), parse_msgpack_payload)

    def parse_payload(self, payload: bytes) -> HubMessage | None:
        """Decode a single record without its length prefix; None for unknown message types."""
        return parse_msgpack_payload(payload)

    def write(self, message: HubMessage) -> bytes:
        """Encode `message` as one complete record (VarInt length + MessagePack array).

        Raises TypeError when a payload value cannot be represented in MessagePack (unknown type, integer
        beyond 64 bits, naive datetime): that is a server bug, not a protocol error.
        """
        if type(message) is PingMessage:
            return _PING_RECORD
        items_of = _WRITERS.get(type(message))
        if items_of is None:
            raise TypeError(f"Cannot write {type(message).__name__}: not a hub message.")
        try:
            payload: bytes = self._packer.pack(items_of(message))
        except _PACK_ERRORS as exc:
            raise TypeError(f"Cannot serialize {type(message).__name__} with MessagePack: {exc}") from exc
        return write_binary_record(payload)
