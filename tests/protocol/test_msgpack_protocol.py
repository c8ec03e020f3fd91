"""The MessagePack hub protocol: the spec's byte examples, client quirks, malformed records."""

from __future__ import annotations

import datetime as dt

import msgpack
import pytest

from service.protocol import (
    MESSAGEPACK_PROTOCOL,
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvalidMessageError,
    InvocationMessage,
    MessagePackHubProtocol,
    MessageTooLargeError,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
    write_binary_record,
)

mp = MESSAGEPACK_PROTOCOL


def hexbytes(spec: str) -> bytes:
    """``"0x96 0x01"`` (HubProtocol.md notation) -> bytes."""
    return bytes(int(token, 16) for token in spec.split())


def read_all(data: bytes, max_size: int | None = None) -> list[HubMessage]:
    reader = mp.new_reader(max_size)
    reader.feed(data)
    messages = []
    while (message := reader.next_message()) is not None:
        messages.append(message)
    return messages


def read_payload(payload: bytes) -> HubMessage:
    messages = read_all(write_binary_record(payload))
    assert len(messages) == 1
    return messages[0]


def read_items(items: list[object]) -> HubMessage:
    return read_payload(msgpack.packb(items))


def test_protocol_identity() -> None:
    assert isinstance(mp, MessagePackHubProtocol)
    assert mp.name == "messagepack"
    assert mp.version == 2
    assert mp.transfer_format is TransferFormat.BINARY
    assert mp.is_version_supported(1)
    assert mp.is_version_supported(2)
    assert not mp.is_version_supported(3)


# --- HubProtocol.md examples, both directions ----------------------------------------------------------

SPEC_EXAMPLES = [
    pytest.param(
        "0x96 0x01 0x80 0xa3 0x78 0x79 0x7a 0xa6 0x6d 0x65 0x74 0x68 0x6f 0x64 0x91 0x2a 0x90",
        InvocationMessage("method", (42,), "xyz"),
        id="invocation",
    ),
    pytest.param(
        "0x96 0x01 0x80 0xc0 0xa6 0x6d 0x65 0x74 0x68 0x6f 0x64 0x91 0x2a 0x90",
        InvocationMessage("method", (42,)),
        id="non-blocking invocation",
    ),
    pytest.param(
        "0x96 0x04 0x80 0xa3 0x78 0x79 0x7a 0xa6 0x6d 0x65 0x74 0x68 0x6f 0x64 0x91 0x2a 0x90",
        StreamInvocationMessage("xyz", "method", (42,)),
        id="stream invocation",
    ),
    pytest.param("0x94 0x02 0x80 0xa3 0x78 0x79 0x7a 0x2a", StreamItemMessage("xyz", 42), id="stream item"),
    pytest.param(
        "0x95 0x03 0x80 0xa3 0x78 0x79 0x7a 0x01 0xa5 0x45 0x72 0x72 0x6f 0x72",
        CompletionMessage.with_error("xyz", "Error"),
        id="completion error",
    ),
    pytest.param(
        "0x94 0x03 0x80 0xa3 0x78 0x79 0x7a 0x02", CompletionMessage.void("xyz"), id="completion void"
    ),
    pytest.param(
        "0x95 0x03 0x80 0xa3 0x78 0x79 0x7a 0x03 0x2a",
        CompletionMessage.with_result("xyz", 42),
        id="completion result",
    ),
    pytest.param("0x93 0x05 0x80 0xa3 0x78 0x79 0x7a", CancelInvocationMessage("xyz"), id="cancel"),
    pytest.param("0x91 0x06", PING, id="ping"),
    pytest.param("0x93 0x07 0xa3 0x78 0x79 0x7a 0xc3", CloseMessage("xyz", True), id="close reconnect"),
    pytest.param(
        "0x96 0x01 0x82 0xa1 0x78 0xa1 0x79 0xa1 0x7a 0xa1 0x7a 0xa3 0x78 0x79 0x7a "
        "0xa6 0x6d 0x65 0x74 0x68 0x6f 0x64 0x91 0x2a 0x90",
        InvocationMessage("method", (42,), "xyz", {"x": "y", "z": "z"}),
        id="headers",
    ),
]


@pytest.mark.parametrize(("payload", "message"), SPEC_EXAMPLES)
def test_spec_examples_are_written_byte_for_byte(payload: str, message: HubMessage) -> None:
    data = hexbytes(payload)
    assert mp.write(message) == bytes([len(data)]) + data


@pytest.mark.parametrize(("payload", "message"), SPEC_EXAMPLES)
def test_spec_examples_are_read(payload: str, message: HubMessage) -> None:
    assert read_payload(hexbytes(payload)) == message


def test_spec_close_and_ack_and_sequence_examples_are_read() -> None:
    assert read_payload(hexbytes("0x92 0x07 0xa3 0x78 0x79 0x7a")) == CloseMessage("xyz")
    assert read_payload(hexbytes("0x92 0x08 0xcc 0x24")) == AckMessage(36)
    assert read_payload(hexbytes("0x92 0x09 0xcc 0x13")) == SequenceMessage(19)


# --- writing -------------------------------------------------------------------------------------------


def test_ping_is_exactly_0x91_0x06_with_its_prefix() -> None:
    assert mp.write(PING) == b"\x02\x91\x06"
    assert mp.write(PING) is mp.write(PING)


@pytest.mark.parametrize(
    ("message", "items"),
    [
        (CloseMessage(), [7, None, False]),
        (CloseMessage(""), [7, None, False]),  # .NET: IsNullOrEmpty(Error) -> nil
        (CloseMessage("bye", allow_reconnect=True), [7, "bye", True]),
        (AckMessage(1), [8, 1]),
        (SequenceMessage(2**40), [9, 2**40]),
        (CompletionMessage.with_result("1", None), [3, {}, "1", 3, None]),
        (CompletionMessage.with_error("1", ""), [3, {}, "1", 1, ""]),
        (InvocationMessage("m", (), ""), [1, {}, None, "m", [], []]),
        (InvocationMessage("m", (1,), "7", stream_ids=("0", "1")), [1, {}, "7", "m", [1], ["0", "1"]]),
        (StreamInvocationMessage("7", "m", (), stream_ids=("0",)), [4, {}, "7", "m", [], ["0"]]),
        (StreamItemMessage("7", [1, "a"], {"h": "v"}), [2, {"h": "v"}, "7", [1, "a"]]),
        (CancelInvocationMessage("7"), [5, {}, "7"]),
    ],
)
def test_write_layouts(message: HubMessage, items: list[object]) -> None:
    assert mp.write(message) == write_binary_record(msgpack.packb(items))


def test_write_long_payload_uses_multi_byte_prefix() -> None:
    record = mp.write(InvocationMessage("m", ("x" * 300,)))
    payload = msgpack.packb([1, {}, None, "m", ["x" * 300], []])
    assert record == write_binary_record(payload)
    assert record[0] & 0x80


def test_write_bytes_as_bin_and_datetime_as_timestamp() -> None:
    when = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    record = mp.write(StreamItemMessage("1", [b"\x00\x01", when]))
    payload = record[1:]
    # bin8 for bytes, fixext4 timestamp (0xd6 0xff + uint32 seconds) for a whole-second datetime.
    assert b"\xc4\x02\x00\x01" in payload
    assert b"\xd6\xff" + (946684800).to_bytes(4, "big") in payload
    assert read_payload(payload) == StreamItemMessage("1", [b"\x00\x01", when])


@pytest.mark.parametrize(
    "bad",
    [object(), 2**64, -(2**63) - 1, dt.datetime(2000, 1, 1), "\ud800"],  # a naive datetime on purpose
)
def test_unserializable_payload_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError, match="MessagePack"):
        mp.write(InvocationMessage("m", (bad,)))
    # The shared packer recovers from the failure.
    assert mp.write(AckMessage(1)) == write_binary_record(b"\x92\x08\x01")


def test_writing_a_non_message_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a hub message"):
        mp.write(42)  # type: ignore[arg-type]


# --- reading: client quirks ----------------------------------------------------------------------------


def test_read_js_five_element_invocation() -> None:
    # The JS client (MessagePackHubProtocol.ts) omits the stream id array when there are no streams.
    assert read_items([1, {}, "0", "Echo", ["hi"]]) == InvocationMessage("Echo", ("hi",), "0")
    assert read_items([4, {}, "1", "Stream", [3]]) == StreamInvocationMessage("1", "Stream", (3,))


def test_read_empty_invocation_id_means_non_blocking() -> None:
    assert read_items([1, {}, "", "Send", []]) == InvocationMessage("Send", ())


def test_read_js_two_element_close() -> None:
    assert read_items([7, None]) == CloseMessage()
    assert read_items([7, "err"]) == CloseMessage("err")


def test_read_tolerates_extra_elements() -> None:
    assert read_items([6, "future"]) == PING
    assert read_items([1, {}, "1", "m", [], ["s"], "future", 1]) == InvocationMessage(
        "m", (), "1", stream_ids=("s",)
    )
    assert read_items([3, {}, "1", 2, "ignored"]) == CompletionMessage.void("1")
    assert read_items([7, None, True, "future"]) == CloseMessage(None, True)
    assert read_items([8, 3, "future"]) == AckMessage(3)


@pytest.mark.parametrize(
    "encoded_type",
    [
        b"\x01",
        b"\xcc\x01",
        b"\xcd\x00\x01",
        b"\xce\x00\x00\x00\x01",
        b"\xd0\x01",
        b"\xd3" + b"\x00" * 7 + b"\x01",
    ],
)
def test_read_integers_of_any_width(encoded_type: bytes) -> None:
    payload = b"\x95" + encoded_type + b"\x80\xc0\xa1m\x90"
    assert read_payload(payload) == InvocationMessage("m", ())


def test_read_sequence_id_of_any_width() -> None:
    assert read_payload(b"\x92\x08\xcf" + (2**63 - 1).to_bytes(8, "big")) == AckMessage(2**63 - 1)


def test_read_payload_values() -> None:
    message = read_items([2, {}, "1", {"a": [1, 2.5, None, True, b"\x00"], 1: "int key"}])
    assert message == StreamItemMessage("1", {"a": [1, 2.5, None, True, b"\x00"], 1: "int key"})


def test_read_timestamp_as_aware_datetime() -> None:
    payload = b"\x94\x02\x80\xa11\xd6\xff" + (946684800).to_bytes(4, "big")
    message = read_payload(payload)
    assert isinstance(message, StreamItemMessage)
    assert message.item == dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def test_unknown_message_types_are_skipped() -> None:
    data = b"".join(
        write_binary_record(msgpack.packb(items)) for items in ([99, "x"], [0], [10, {}, None], [6])
    )
    assert read_all(data) == [PING]


def test_several_records_and_split_at_every_offset() -> None:
    messages: list[HubMessage] = [
        InvocationMessage("Echo", ("héllo",), "0"),
        PING,
        CompletionMessage.with_result("s1", [1, 2]),
        StreamItemMessage("2", "x" * 200),
    ]
    stream = b"".join(mp.write(message) for message in messages)
    assert read_all(stream) == messages
    for offset in range(len(stream) + 1):
        reader = mp.new_reader(32768)
        got = []
        for chunk in (stream[:offset], stream[offset:]):
            reader.feed(chunk)
            while (message := reader.next_message()) is not None:
                got.append(message)
        assert got == messages, offset


def test_reader_enforces_the_size_limit_before_the_payload_arrives() -> None:
    reader = mp.new_reader(100)
    reader.feed(b"\xe8\x07")  # declares 1000 bytes
    with pytest.raises(MessageTooLargeError, match="100B"):
        reader.next_message()


def test_parse_payload_without_framing() -> None:
    assert mp.parse_payload(b"\x91\x06") == PING
    assert mp.parse_payload(b"\x91\x63") is None


# --- reading: malformed records ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "error"),
    [
        ({"type": 1}, "Expected a MessagePack array."),
        ("text", "Expected a MessagePack array."),
        ([], "Reading 'messageType' as Int32 failed."),
        (["1"], "Reading 'messageType' as Int32 failed."),
        ([True], "Reading 'messageType' as Int32 failed."),
        ([1.0], "Reading 'messageType' as Int32 failed."),
        ([1, {}, "1", "m"], "Invalid payload for Invocation message: expected at least 5 elements, got 4."),
        ([1, None, "1", "m", []], "Reading map length for 'headers' failed."),
        ([1, {"a": 1}, "1", "m", []], "Expected headers to map strings to strings."),
        ([1, {1: "a"}, "1", "m", []], "Expected headers to map strings to strings."),
        ([1, {}, 1, "m", []], "Reading 'invocationId' as String failed."),
        ([1, {}, "1", "", []], "Null or empty target for Invocation message."),
        ([1, {}, "1", None, []], "Null or empty target for Invocation message."),
        ([1, {}, "1", 5, []], "Reading 'target' as String failed."),
        ([1, {}, "1", "m", {}], "Reading array length for 'arguments' failed."),
        ([1, {}, "1", "m", [], None], "Reading array length for 'streamIds' failed."),
        ([1, {}, "1", "m", [], [1]], "Null or empty value in streamIds received."),
        ([1, {}, "1", "m", [], [""]], "Null or empty value in streamIds received."),
        ([4, {}, None, "m", []], "Null or empty invocation ID for StreamInvocation message."),
        ([4, {}, "", "m", []], "Null or empty invocation ID for StreamInvocation message."),
        ([4, {}, "1", "", []], "Null or empty target for StreamInvocation message."),
        ([2, {}, "1"], "Invalid payload for StreamItem message: expected at least 4 elements, got 3."),
        ([2, {}, None, 1], "Null or empty invocation ID for StreamItem message."),
        ([3, {}, "1"], "Invalid payload for Completion message: expected at least 4 elements, got 3."),
        ([3, {}, None, 2], "Null or empty invocation ID for Completion message."),
        ([3, {}, "1", "2"], "Reading 'resultKind' as Int32 failed."),
        ([3, {}, "1", 4], "Invalid invocation result kind."),
        ([3, {}, "1", 1], "Invalid payload for Completion message: expected at least 5 elements, got 4."),
        ([3, {}, "1", 3], "Invalid payload for Completion message: expected at least 5 elements, got 4."),
        ([3, {}, "1", 1, None], "Reading 'error' as String failed."),
        ([5, {}], "Invalid payload for CancelInvocation message: expected at least 3 elements, got 2."),
        ([5, {}, ""], "Null or empty invocation ID for CancelInvocation message."),
        ([7], "Invalid payload for Close message: expected at least 2 elements, got 1."),
        ([7, 1], "Reading 'error' as String failed."),
        ([7, None, 1], "Reading 'allowReconnect' as Boolean failed."),
        ([7, None, None], "Reading 'allowReconnect' as Boolean failed."),
        ([8], "Invalid payload for Ack message: expected at least 2 elements, got 1."),
        ([8, -1], "Reading 'sequenceId' as a non-negative Int64 failed."),
        ([9, "1"], "Reading 'sequenceId' as a non-negative Int64 failed."),
        ([9, 2**64 - 1], "Reading 'sequenceId' as a non-negative Int64 failed."),
        ([9, 1.0], "Reading 'sequenceId' as a non-negative Int64 failed."),
    ],
)
def test_malformed_records(items: object, error: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        read_payload(msgpack.packb(items))
    assert str(info.value) == error


@pytest.mark.parametrize(
    "payload",
    [
        b"",  # zero-length record
        b"\x91",  # truncated array
        b"\x92\x06",  # array promising more than it has
        b"\x91\x06\x06",  # trailing bytes after the message
        b"\xc1",  # reserved byte
        b"\x91\xa2\xff\xfe",  # invalid UTF-8 string
        b"\x92\x02\x81\x91\x01\x02",  # unhashable map key
        b"\x91\xc7\x0c\xff" + b"\xff" * 12,  # invalid timestamp
        b"\x91" * 5000 + b"\x06",  # nesting too deep
        b"\xdd\xff\xff\xff\xff",  # array header declaring 4 billion elements
    ],
)
def test_undecodable_payloads_are_invalid_messages(payload: bytes) -> None:
    with pytest.raises(InvalidMessageError):
        read_payload(payload)


def test_out_of_range_timestamp_is_an_invalid_message() -> None:
    # ext8 timestamp: nanoseconds 0, seconds = 2**62 (far beyond datetime's year 9999).
    payload = b"\x94\x02\x80\xa11\xc7\x0c\xff" + b"\x00" * 4 + (2**62).to_bytes(8, "big")
    with pytest.raises(InvalidMessageError):
        read_payload(payload)


@pytest.mark.parametrize(
    "timestamp",
    [
        # timestamp 64: 30-bit nanoseconds over 34-bit seconds; 96: uint32 nanoseconds, int64 seconds.
        b"\xd7\xff" + ((1_000_000_005 << 34) | 10).to_bytes(8, "big"),
        b"\xc7\x0c\xff" + (1_000_000_005).to_bytes(4, "big") + (10).to_bytes(8, "big"),
    ],
    ids=["timestamp64", "timestamp96"],
)
def test_timestamp_with_a_second_or_more_of_nanoseconds_is_an_invalid_message(timestamp: bytes) -> None:
    # The msgpack spec: "nanoseconds must not be larger than 999999999". .NET refuses it; decoded
    # as it was, 10 s + 1,000,000,005 ns became 11.000000005 s.
    with pytest.raises(InvalidMessageError, match="nanoseconds"):
        read_payload(b"\x94\x02\x80\xa11" + timestamp)


def test_timestamps_nested_in_arguments_become_aware_datetimes() -> None:
    stamp = b"\xd6\xff" + (946684800).to_bytes(4, "big")
    payload = b"\x94\x02\x80\xa11\x92\x81\xa1t" + stamp + b"\x91" + stamp
    message = read_payload(payload)
    assert isinstance(message, StreamItemMessage)
    when = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    assert message.item == [{"t": when}, [when]]


def test_a_timestamp_nested_as_deep_as_msgpack_reads_is_no_crash() -> None:
    # 1,000 arrays deep (msgpack itself stops at 1,024): converting the timestamp must not recurse.
    stamp = b"\xd6\xff" + (946684800).to_bytes(4, "big")
    message = read_payload(b"\x94\x02\x80\xa11" + b"\x91" * 1000 + stamp)
    assert isinstance(message, StreamItemMessage)
    item = message.item
    for _ in range(1000):
        [item] = item
    assert item == dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
