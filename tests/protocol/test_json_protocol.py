"""The JSON hub protocol: exact bytes written, client quirks accepted, malformed records rejected."""

from __future__ import annotations

import datetime as dt

import pytest

from service.protocol import (
    JSON_PROTOCOL,
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HubMessage,
    InvalidMessageError,
    InvocationMessage,
    JsonHubProtocol,
    MessageTooLargeError,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
)

json = JSON_PROTOCOL


def read_all(data: bytes, max_size: int | None = None) -> list[HubMessage]:
    reader = json.new_reader(max_size)
    reader.feed(data)
    messages = []
    while (message := reader.next_message()) is not None:
        messages.append(message)
    return messages


def read_one(record: str | bytes) -> HubMessage:
    data = record.encode() if isinstance(record, str) else record
    messages = read_all(data + b"\x1e")
    assert len(messages) == 1
    return messages[0]


def test_protocol_identity() -> None:
    assert isinstance(json, JsonHubProtocol)
    assert json.name == "json"
    assert json.version == 2
    assert json.transfer_format is TransferFormat.TEXT
    assert json.is_version_supported(1)
    assert json.is_version_supported(2)
    assert not json.is_version_supported(3)


# --- writing: exact bytes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (CompletionMessage.with_result("0", "hi"), b'{"type":3,"invocationId":"0","result":"hi"}'),
        (CompletionMessage.with_result("0", None), b'{"type":3,"invocationId":"0","result":null}'),
        (CompletionMessage.void("1"), b'{"type":3,"invocationId":"1"}'),
        (CompletionMessage.with_error("1", "boom"), b'{"type":3,"invocationId":"1","error":"boom"}'),
        # JsonHubProtocol.WriteCompletionMessage writes `error` only when non-empty.
        (CompletionMessage.with_error("1", ""), b'{"type":3,"invocationId":"1"}'),
        (
            InvocationMessage("Send", (42, "Test Message")),
            b'{"type":1,"target":"Send","arguments":[42,"Test Message"]}',
        ),
        (
            InvocationMessage("Send", (42,), "123", stream_ids=("1",)),
            b'{"type":1,"invocationId":"123","target":"Send","arguments":[42],"streamIds":["1"]}',
        ),
        (
            InvocationMessage("Send", (), "", {"Foo": "Bar"}),
            b'{"type":1,"headers":{"Foo":"Bar"},"target":"Send","arguments":[]}',
        ),
        (
            StreamInvocationMessage("123", "Send", (42, "Test Message")),
            b'{"type":4,"invocationId":"123","target":"Send","arguments":[42,"Test Message"]}',
        ),
        (StreamItemMessage("123", 42), b'{"type":2,"invocationId":"123","item":42}'),
        (StreamItemMessage("123", None), b'{"type":2,"invocationId":"123","item":null}'),
        (CancelInvocationMessage("123"), b'{"type":5,"invocationId":"123"}'),
        (PING, b'{"type":6}'),
        (CloseMessage(), b'{"type":7}'),
        (CloseMessage("bad"), b'{"type":7,"error":"bad"}'),
        (CloseMessage(allow_reconnect=True), b'{"type":7,"allowReconnect":true}'),
        (
            CloseMessage("Connection closed with an error.", True),
            b'{"type":7,"error":"Connection closed with an error.","allowReconnect":true}',
        ),
        (AckMessage(1394), b'{"type":8,"sequenceId":1394}'),
        (SequenceMessage(1234), b'{"type":9,"sequenceId":1234}'),
    ],
)
def test_write_exact_bytes(message: HubMessage, expected: bytes) -> None:
    assert json.write(message) == expected + b"\x1e"


def test_write_headers_come_right_after_type() -> None:
    message = CompletionMessage("1", result=[1], has_result=True, headers={"a": "b"})
    assert json.write(message) == b'{"type":3,"headers":{"a":"b"},"invocationId":"1","result":[1]}\x1e'
    cancel = CancelInvocationMessage("2", headers={"x": "y"})
    assert json.write(cancel) == b'{"type":5,"headers":{"x":"y"},"invocationId":"2"}\x1e'


def test_write_empty_stream_ids_are_omitted() -> None:
    assert b"streamIds" not in json.write(InvocationMessage("m", (), "1", stream_ids=()))


def test_write_non_ascii_as_raw_utf8() -> None:
    written = json.write(InvocationMessage("notify", ("héllo ✓ 日本",)))
    assert written == '{"type":1,"target":"notify","arguments":["héllo ✓ 日本"]}\x1e'.encode()


def test_write_payload_values() -> None:
    when = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    written = json.write(InvocationMessage("m", ({"n": [1, 2.5, True, None]}, (1, 2), when)))
    assert written == (
        b'{"type":1,"target":"m","arguments":[{"n":[1,2.5,true,null]},[1,2],"2000-01-01T00:00:00Z"]}\x1e'
    )


def test_ping_bytes_are_cached() -> None:
    assert json.write(PING) is json.write(PING)


@pytest.mark.parametrize("bad", [object(), b"bytes", {1: "int key"}, 2**64])
def test_unserializable_payload_is_a_type_error(bad: object) -> None:
    with pytest.raises(TypeError):
        json.write(InvocationMessage("m", (bad,)))


def test_writing_a_non_message_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="not a hub message"):
        json.write("hello")  # type: ignore[arg-type]


# --- reading: what clients send ------------------------------------------------------------------------


def test_read_js_invocation_with_type_last() -> None:
    # The JS client (JsonHubProtocol.ts) writes `type` last.
    message = read_one('{"target":"Echo","arguments":["hi"],"invocationId":"0","type":1}')
    assert message == InvocationMessage("Echo", ("hi",), "0")


def test_read_arguments_before_target() -> None:
    assert read_one('{"arguments":[1,2],"type":1,"target":"Add"}') == InvocationMessage("Add", (1, 2))


@pytest.mark.parametrize("invocation_id", ['"invocationId":null,', '"invocationId":"",', ""])
def test_read_non_blocking_invocation(invocation_id: str) -> None:
    message = read_one('{"type":1,' + invocation_id + '"target":"Send","arguments":[]}')
    assert message == InvocationMessage("Send", ())
    assert isinstance(message, InvocationMessage)
    assert message.invocation_id is None


def test_read_pysignalr_invocation_with_http_headers_and_empty_stream_ids() -> None:
    record = (
        '{"type":1,"invocationId":"7f3c","target":"Send","arguments":["x"],'
        '"headers":{"Authorization":"Bearer t","Cookie":"a=b"},"streamIds":[]}'
    )
    message = read_one(record)
    assert message == InvocationMessage(
        "Send", ("x",), "7f3c", {"Authorization": "Bearer t", "Cookie": "a=b"}, ()
    )


def test_read_headers_are_read_only() -> None:
    message = read_one('{"type":5,"invocationId":"1","headers":{"a":"b"}}')
    assert isinstance(message, CancelInvocationMessage)
    with pytest.raises(TypeError):
        message.headers["a"] = "c"  # type: ignore[index]


def test_read_stream_ids() -> None:
    message = read_one('{"type":1,"invocationId":"1","target":"Upload","arguments":[],"streamIds":["0"]}')
    assert message == InvocationMessage("Upload", (), "1", stream_ids=("0",))


def test_read_unknown_properties_are_ignored() -> None:
    message = read_one('{"type":6,"future":{"x":[1,2]},"another":null}')
    assert message == PING


def test_read_signalrcore_completion_with_null_error_and_result() -> None:
    # signalrcore sends "error": null and "result": null; null error = no error, present result = has_result.
    message = read_one('{"type":3,"invocationId":"s1","error":null,"result":null,"headers":{}}')
    assert message == CompletionMessage.with_result("s1", None)


def test_read_completion_variants() -> None:
    assert read_one('{"type":3,"invocationId":"1"}') == CompletionMessage.void("1")
    assert read_one('{"result":{"a":1},"invocationId":"1","type":3}') == CompletionMessage.with_result(
        "1", {"a": 1}
    )
    assert read_one('{"type":3,"invocationId":"1","error":"Error: from callback"}') == (
        CompletionMessage.with_error("1", "Error: from callback")
    )


def test_read_stream_item_null_item() -> None:
    assert read_one('{"item":null,"invocationId":"0","type":2}') == StreamItemMessage("0", None)


def test_read_stream_invocation_and_cancel() -> None:
    assert read_one('{"type":4,"invocationId":"2","target":"Counter","arguments":[5,10]}') == (
        StreamInvocationMessage("2", "Counter", (5, 10))
    )
    assert read_one('{"type":5,"invocationId":"2"}') == CancelInvocationMessage("2")


def test_read_close_variants() -> None:
    assert read_one('{"type":7}') == CloseMessage()
    assert read_one('{"type":7,"error":null}') == CloseMessage()
    assert read_one('{"type":7,"error":"x","allowReconnect":true}') == CloseMessage("x", True)


def test_read_ack_and_sequence() -> None:
    assert read_one('{"type":8,"sequenceId":5}') == AckMessage(5)
    assert read_one('{"sequenceId":0,"type":9}') == SequenceMessage(0)


def test_unknown_message_types_are_skipped() -> None:
    assert read_all(b'{"type":99,"x":1}\x1e{"type":0}\x1e{"type":-1}\x1e{"type":6}\x1e') == [PING]


def test_several_records_in_one_feed_and_empty_records() -> None:
    data = b'{"type":6}\x1e\x1e{"type":1,"target":"a","arguments":[]}\x1e{"type":7}\x1e'
    assert read_all(data) == [PING, InvocationMessage("a", ()), CloseMessage()]


def test_record_split_across_feeds_at_every_offset() -> None:
    stream = (
        '{"target":"Echo","arguments":["héllo"],"invocationId":"0","type":1}\x1e'
        '{"type":6}\x1e{"type":3,"invocationId":"s1","result":[1,2]}\x1e'
    ).encode()
    expected = [
        InvocationMessage("Echo", ("héllo",), "0"),
        PING,
        CompletionMessage.with_result("s1", [1, 2]),
    ]
    for offset in range(len(stream) + 1):
        reader = json.new_reader(32768)
        got = []
        for chunk in (stream[:offset], stream[offset:]):
            reader.feed(chunk)
            while (message := reader.next_message()) is not None:
                got.append(message)
        assert got == expected, offset


def test_reader_enforces_the_size_limit() -> None:
    with pytest.raises(MessageTooLargeError):
        read_all(b'{"type":1,"target":"a","arguments":["' + b"x" * 100 + b'"]}\x1e', max_size=64)


def test_reader_reports_buffered_size() -> None:
    reader = json.new_reader(None)
    reader.feed(b'{"type":6}\x1e{"ty')
    assert reader.next_message() == PING
    assert reader.next_message() is None
    assert reader.buffered_size == 4


def test_parse_payload_without_framing() -> None:
    assert json.parse_payload(b'{"type":6}') == PING
    assert json.parse_payload(b'{"type":42}') is None


# --- reading: malformed records ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("record", "error"),
    [
        (b'{"target":"a","arguments":[]}', "Missing required property 'type'."),
        (b'{"type":"1"}', "Expected 'type' to be an integer Number."),
        (b'{"type":1.0}', "Expected 'type' to be an integer Number."),
        (b'{"type":true}', "Expected 'type' to be an integer Number."),
        (b'{"type":null}', "Expected 'type' to be an integer Number."),
        (b'{"type":1,"arguments":[]}', "Missing required property 'target'."),
        (b'{"type":1,"target":"","arguments":[]}', "Missing required property 'target'."),
        (b'{"type":1,"target":5,"arguments":[]}', "Expected 'target' to be of type String."),
        (b'{"type":1,"target":"a"}', "Missing required property 'arguments'."),
        (b'{"type":1,"target":"a","arguments":{}}', "Expected 'arguments' to be of type Array."),
        (b'{"type":1,"target":"a","arguments":null}', "Expected 'arguments' to be of type Array."),
        (
            b'{"type":1,"target":"a","arguments":[],"invocationId":1}',
            "Expected 'invocationId' to be of type String.",
        ),
        (
            b'{"type":1,"target":"a","arguments":[],"streamIds":"1"}',
            "Expected 'streamIds' to be of type Array.",
        ),
        (
            b'{"type":1,"target":"a","arguments":[],"streamIds":[1]}',
            "Expected 'streamIds' to contain only strings.",
        ),
        (b'{"type":1,"target":"a","arguments":[],"headers":[]}', "Expected 'headers' to be of type Object."),
        (
            b'{"type":1,"target":"a","arguments":[],"headers":{"a":1}}',
            "Expected header 'a' to be of type String.",
        ),
        (b'{"type":4,"target":"a","arguments":[]}', "Missing required property 'invocationId'."),
        (
            b'{"type":4,"invocationId":"","target":"a","arguments":[]}',
            "Missing required property 'invocationId'.",
        ),
        (b'{"type":2,"item":1}', "Missing required property 'invocationId'."),
        (b'{"type":2,"invocationId":"1"}', "Missing required property 'item'."),
        (b'{"type":3}', "Missing required property 'invocationId'."),
        (
            b'{"type":3,"invocationId":"1","error":"e","result":null}',
            "The 'error' and 'result' properties are mutually exclusive.",
        ),
        (b'{"type":3,"invocationId":"1","error":5}', "Expected 'error' to be of type String."),
        (b'{"type":5}', "Missing required property 'invocationId'."),
        (b'{"type":7,"allowReconnect":"yes"}', "Expected 'allowReconnect' to be of type Boolean."),
        (b'{"type":7,"allowReconnect":null}', "Expected 'allowReconnect' to be of type Boolean."),
        (b'{"type":7,"error":false}', "Expected 'error' to be of type String."),
        (b'{"type":8}', "Missing required property 'sequenceId'."),
        (b'{"type":8,"sequenceId":-1}', "Expected 'sequenceId' to be a non-negative 64-bit integer."),
        (b'{"type":9,"sequenceId":1.5}', "Expected 'sequenceId' to be a non-negative 64-bit integer."),
        (b'{"type":9,"sequenceId":"1"}', "Expected 'sequenceId' to be a non-negative 64-bit integer."),
        (
            b'{"type":9,"sequenceId":9223372036854775808}',
            "Expected 'sequenceId' to be a non-negative 64-bit integer.",
        ),
        (b"[1,2]", "Expected a JSON object."),
        (b'"text"', "Expected a JSON object."),
        (b"null", "Expected a JSON object."),
    ],
)
def test_malformed_records(record: bytes, error: str) -> None:
    with pytest.raises(InvalidMessageError) as info:
        read_one(record)
    assert str(info.value) == error


@pytest.mark.parametrize(
    "record",
    [
        b"{",
        b"not json",
        b'{"type":6,}',
        b'{"type":6} {"type":6}',
        b'{"type":6,"x":"\xff\xfe"}',  # invalid UTF-8
        b'{"type":6,"x":"\xed\xa0\x80"}',  # encoded surrogate
        b'{"type":6,"x":' + b"[" * 2000 + b"]" * 2000 + b"}",  # too deep
        b'{"type":6,"x":1e400}',  # overflows a double
        b'{"type":6,"x":NaN}',
        b"\x00",
    ],
)
def test_invalid_json_is_an_invalid_message(record: bytes) -> None:
    with pytest.raises(InvalidMessageError, match=r"^Error reading JSON"):
        read_one(record)


def test_type_validation_errors_are_protocol_errors_for_all_types() -> None:
    # Fields irrelevant to a message type are not validated (Ping with junk target is still a Ping).
    assert read_one('{"type":6,"target":5,"arguments":"x"}') == PING
