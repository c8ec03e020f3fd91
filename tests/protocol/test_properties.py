"""Property tests over both hub protocols: round trips, chunking, and hostile input.

The invariant that matters most for the server: whatever bytes a client sends, the protocol package only
ever raises ProtocolError subclasses, so the connection loop can close the connection cleanly.
"""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.protocol import (
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    HubMessage,
    HubProtocol,
    InvalidMessageError,
    ProtocolError,
    parse_handshake_request,
    write_binary_record,
    write_text_record,
)
from service.protocol.json_protocol import parse_json_payload
from service.protocol.msgpack_protocol import parse_msgpack_payload
from tests.protocol.strategies import MESSAGE_STRATEGIES, messages, normalize, split_at, values

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
    with contextlib.suppress(ProtocolError):
        read_chunks(protocol, split_at(data, cuts), max_size=limit)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.none() | st.integers(min_value=1, max_value=128))
def test_arbitrary_handshake_bytes_only_raise_protocol_errors(data: bytes, limit: int | None) -> None:
    for candidate in (data, data + b"\x1e"):
        try:
            result = parse_handshake_request(candidate, limit)
        except ProtocolError:
            continue
        if result is not None:
            assert 1 <= result[1] <= len(candidate)


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


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(json_keys, json_fields, max_size=8))
def test_structured_json_objects_parse_or_raise_invalid_message(obj: dict[str, Any]) -> None:
    with contextlib.suppress(InvalidMessageError):
        parse_json_payload(orjson.dumps(obj))


@settings(max_examples=500, deadline=None)
@given(
    st.integers(min_value=-1, max_value=11),
    st.lists(st.one_of(json_fields, st.binary(max_size=4)), max_size=7),
)
def test_structured_msgpack_arrays_parse_or_raise_invalid_message(message_type: int, rest: list[Any]) -> None:
    with contextlib.suppress(InvalidMessageError):
        parse_msgpack_payload(msgpack.packb([message_type, *rest]))


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
    with contextlib.suppress(InvalidMessageError):
        read_chunks(MESSAGEPACK_PROTOCOL, [write_binary_record(bytes(payload))])


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_corrupted_json_records_parse_or_raise_invalid_message(
    message: HubMessage, data: st.DataObject
) -> None:
    payload = bytearray(JSON_PROTOCOL.write(message)[:-1])
    for _ in range(data.draw(st.integers(min_value=1, max_value=3))):
        index = data.draw(st.integers(min_value=0, max_value=len(payload) - 1))
        payload[index] = data.draw(st.integers(min_value=0, max_value=255).filter(lambda b: b != 0x1E))
    with contextlib.suppress(InvalidMessageError):
        read_chunks(JSON_PROTOCOL, [write_text_record(bytes(payload))])


def _payload_length(record: bytes) -> int:
    """The VarInt-declared payload length at the start of a binary record."""
    length = 0
    for index, byte in enumerate(record[:5]):
        length |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return length
    raise AssertionError("record has no valid length prefix")
