"""Property tests over both hub protocols: round trips, chunking, and hostile input.

The invariant that matters most for the server: whatever bytes a client sends, the protocol package only
ever raises ProtocolError subclasses, so the connection loop can close the connection cleanly. And
whatever it accepts is a well-formed message: the fields the input carries, in a message the writer
encodes and the reader reads back unchanged (``assert_round_trips``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.protocol import (
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    HandshakeRequest,
    HubMessage,
    HubProtocol,
    InvalidMessageError,
    MessageType,
    ProtocolError,
    parse_handshake_request,
    write_binary_record,
    write_text_record,
)
from service.protocol.json_protocol import parse_json_payload
from service.protocol.msgpack_protocol import parse_msgpack_payload
from tests.protocol.strategies import (
    MESSAGE_STRATEGIES,
    messages,
    normalize,
    normalize_value,
    split_at,
    values,
)

PROTOCOLS = [pytest.param(JSON_PROTOCOL, id="json"), pytest.param(MESSAGEPACK_PROTOCOL, id="messagepack")]
cut_points = st.lists(st.integers(min_value=0, max_value=4000), max_size=16)


def read_chunks(protocol: HubProtocol, chunks: list[bytes], max_size: int | None = None) -> list[HubMessage]:
    reader = protocol.new_reader(max_size)
    got: list[HubMessage] = []
    for chunk in chunks:
        reader.feed(chunk)
        while (message := reader.next_message()) is not None:
            got.append(message)
    return got


def assert_round_trips(protocol: HubProtocol, message: HubMessage) -> None:
    """``message`` (as parsed from some input) is one the writer encodes and the reader gives back.

    Compared as encoded bytes, not with ``==``: a MessagePack float may be NaN, which equals nothing.
    """
    record = protocol.write(message)
    (again,) = read_chunks(protocol, [record])
    assert type(again) is type(message)
    assert protocol.write(again) == record


KNOWN_TYPES = frozenset(MessageType)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", sorted(MESSAGE_STRATEGIES))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_write_then_read_is_the_identity(protocol: HubProtocol, kind: str, data: st.DataObject) -> None:
    message = data.draw(MESSAGE_STRATEGIES[kind])
    record = protocol.write(message)
    parsed = read_chunks(protocol, [record])
    assert [normalize(m) for m in parsed] == [normalize(message)]
    assert type(parsed[0]) is type(message)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=100, deadline=None)
@given(st.lists(messages, max_size=6), cut_points)
def test_any_chunking_of_a_record_stream_gives_the_same_messages(
    protocol: HubProtocol, sent: list[HubMessage], cuts: list[int]
) -> None:
    stream = b"".join(protocol.write(message) for message in sent)
    whole = read_chunks(protocol, [stream], max_size=None)
    assert [normalize(m) for m in whole] == [normalize(m) for m in sent]
    assert read_chunks(protocol, split_at(stream, cuts), max_size=len(stream) + 1) == whole


# --- hostile input -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.none() | st.integers(min_value=1, max_value=128), cut_points)
def test_arbitrary_bytes_only_raise_protocol_errors(
    protocol: HubProtocol, data: bytes, limit: int | None, cuts: list[int]
) -> None:
    try:
        got = read_chunks(protocol, split_at(data, cuts), max_size=limit)
    except ProtocolError:
        return
    # What was accepted does not depend on how the bytes were cut, and is well formed.
    whole = read_chunks(protocol, [data], max_size=limit)
    assert [protocol.write(message) for message in got] == [protocol.write(message) for message in whole]
    for message in got:
        assert_round_trips(protocol, message)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.none() | st.integers(min_value=1, max_value=128))
def test_arbitrary_handshake_bytes_only_raise_protocol_errors(data: bytes, limit: int | None) -> None:
    for candidate in (data, data + b"\x1e"):
        try:
            result = parse_handshake_request(candidate, limit)
        except ProtocolError:
            continue
        window = candidate if limit is None else candidate[:limit]
        if result is None:  # incomplete: no separator yet, and not more bytes than the limit allows
            assert b"\x1e" not in window
            assert limit is None or len(candidate) <= limit
            continue
        request, consumed = result
        # The record is everything up to the first separator, which lies within the limit...
        assert 1 <= consumed <= len(window)
        assert candidate.index(b"\x1e") == consumed - 1
        # ... and the request is that record's JSON object's protocol and version.
        obj = orjson.loads(candidate[: consumed - 1])
        assert isinstance(request, HandshakeRequest)
        assert (request.protocol, request.version) == (obj["protocol"], obj["version"])
        assert type(request.protocol) is str
        assert type(request.version) is int
        assert -(2**31) <= request.version < 2**31


# JSON objects built from the real property names with random values reach deep into the validators.
json_keys = st.sampled_from(
    [
        "type",
        "target",
        "arguments",
        "invocationId",
        "streamIds",
        "headers",
        "item",
        "result",
        "error",
        "allowReconnect",
        "sequenceId",
        "other",
    ]
)
json_fields = st.one_of(st.integers(min_value=-2, max_value=11), values)

# Where each message field comes from in a JSON object, and its value when the property is absent.
_JSON_FIELDS: dict[str, tuple[str, Any]] = {
    "target": ("target", None),
    "arguments": ("arguments", None),
    "headers": ("headers", {}),
    "stream_ids": ("streamIds", []),
    "item": ("item", None),
    "error": ("error", None),
    "result": ("result", None),
    "allow_reconnect": ("allowReconnect", False),
    "sequence_id": ("sequenceId", None),
}


def assert_fields_from_json(message: HubMessage, obj: dict[str, Any]) -> None:
    """Every field of ``message`` is the value of its property in ``obj`` (or that property's default)."""
    for field in dataclasses.fields(message):
        got = normalize_value(getattr(message, field.name))
        if field.name == "invocation_id":  # "" and null mean "no id" (required ids are never empty)
            assert got == (obj.get("invocationId") or None)
        elif field.name == "has_result":  # present, even as null, means a result
            assert got is ("result" in obj)
        else:
            key, default = _JSON_FIELDS[field.name]
            assert got == normalize_value(obj.get(key, default)), field.name


@st.composite
def near_valid_json_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A real message as a JSON object, with up to two properties removed or replaced."""
    obj: dict[str, Any] = orjson.loads(JSON_PROTOCOL.write(draw(messages))[:-1])
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        key = draw(json_keys)
        if key in obj and draw(st.booleans()):
            del obj[key]
        else:
            obj[key] = draw(json_fields)
    return obj


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(json_keys, json_fields, max_size=8) | near_valid_json_objects())
def test_structured_json_objects_parse_or_raise_invalid_message(obj: dict[str, Any]) -> None:
    try:
        message = parse_json_payload(orjson.dumps(obj))
    except InvalidMessageError:
        return
    if message is None:  # a type number this server does not know is ignored, as ASP.NET does
        assert type(obj["type"]) is int
        assert obj["type"] not in KNOWN_TYPES
        return
    assert message.message_type == obj["type"]
    assert_fields_from_json(message, obj)
    assert_round_trips(JSON_PROTOCOL, message)


msgpack_fields = st.one_of(json_fields, st.binary(max_size=4))


@st.composite
def near_valid_msgpack_arrays(draw: st.DrawFn) -> list[Any]:
    """A real message as a MessagePack array, with up to two elements replaced, or cut short, or extended."""
    record = MESSAGEPACK_PROTOCOL.write(draw(messages))
    items: list[Any] = msgpack.unpackb(record[len(record) - _payload_length(record) :])
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        index = draw(st.integers(min_value=0, max_value=len(items)))
        if index == len(items):
            items.append(draw(msgpack_fields))
        elif draw(st.booleans()):
            items[index] = draw(msgpack_fields)
        else:
            del items[index:]
    return items


@settings(max_examples=500, deadline=None)
@given(
    st.builds(
        lambda message_type, rest: [message_type, *rest],
        st.integers(min_value=-1, max_value=11),
        st.lists(msgpack_fields, max_size=7),
    )
    | near_valid_msgpack_arrays()
)
def test_structured_msgpack_arrays_parse_or_raise_invalid_message(items: list[Any]) -> None:
    message_type = items[0] if items else None
    try:
        message = parse_msgpack_payload(msgpack.packb(items))
    except InvalidMessageError:
        return
    if message is None:
        assert message_type not in KNOWN_TYPES
        return
    assert message.message_type == message_type
    assert_fields_from_msgpack(message, normalize_value(items))
    assert_round_trips(MESSAGEPACK_PROTOCOL, message)


def assert_fields_from_msgpack(message: HubMessage, items: list[Any]) -> None:
    """The fields of ``message`` are the array's elements at HubProtocol.md's positions."""
    fields = normalize(message)[1]
    kind = message.message_type
    if kind <= MessageType.CANCEL_INVOCATION:  # [type, Headers, InvocationId, ...]
        assert fields["headers"] == items[1]
        assert fields["invocation_id"] == (items[2] or None)
    if kind in (MessageType.INVOCATION, MessageType.STREAM_INVOCATION):
        # ..., Target, [Arguments], [StreamIds]?
        assert (fields["target"], fields["arguments"]) == (items[3], items[4])
        assert fields["stream_ids"] == (items[5] if len(items) > 5 else [])
    elif kind == MessageType.STREAM_ITEM:  # ..., Item
        assert fields["item"] == items[3]
    elif kind == MessageType.COMPLETION:  # ..., ResultKind (1 error, 2 void, 3 result), Result?
        assert (fields["error"], fields["has_result"]) == (items[4] if items[3] == 1 else None, items[3] == 3)
        assert fields["result"] == (items[4] if items[3] == 3 else None)
    elif kind == MessageType.CLOSE:  # [7, Error, AllowReconnect?]
        assert (fields["error"], fields["allow_reconnect"]) == (items[1], len(items) > 2 and items[2])
    elif kind in (MessageType.ACK, MessageType.SEQUENCE):  # [type, SequenceId]
        assert fields["sequence_id"] == items[1]


@settings(max_examples=200, deadline=None)
@given(messages, st.data())
def test_truncated_msgpack_records_are_invalid_messages(message: HubMessage, data: st.DataObject) -> None:
    payload = MESSAGEPACK_PROTOCOL.write(message)
    payload = payload[len(payload) - _payload_length(payload) :]
    cut = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
    # A consistent length prefix around a cut payload: the framing is fine, the MessagePack is not.
    with pytest.raises(InvalidMessageError):
        read_chunks(MESSAGEPACK_PROTOCOL, [write_binary_record(payload[:cut])])


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_corrupted_msgpack_records_parse_or_raise_invalid_message(
    message: HubMessage, data: st.DataObject
) -> None:
    record = MESSAGEPACK_PROTOCOL.write(message)
    payload = bytearray(record[len(record) - _payload_length(record) :])
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
        payload[index] = data.draw(st.integers(min_value=0, max_value=255))
    try:
        got = read_chunks(MESSAGEPACK_PROTOCOL, [write_binary_record(bytes(payload))])
    except InvalidMessageError:
        return
    assert len(got) <= 1  # one record: one message, or none for an unknown type
    for parsed in got:
        assert_round_trips(MESSAGEPACK_PROTOCOL, parsed)


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_corrupted_json_records_parse_or_raise_invalid_message(
    message: HubMessage, data: st.DataObject
) -> None:
    payload = bytearray(JSON_PROTOCOL.write(message)[:-1])
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
        payload[index] = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != 0x1E))
    try:
        got = read_chunks(JSON_PROTOCOL, [write_text_record(bytes(payload))])
    except InvalidMessageError:
        return
    assert len(got) <= 1
    for parsed in got:
        assert_round_trips(JSON_PROTOCOL, parsed)
        assert_fields_from_json(parsed, orjson.loads(payload))


def _payload_length(record: bytes) -> int:
    """The VarInt-declared payload length at the start of a binary record."""
    length = 0
    for index, byte in enumerate(record[:5]):
        length |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return length
    raise AssertionError("record has no valid length prefix")
