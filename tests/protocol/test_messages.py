"""The message model: numbering, constructors, immutability, trackability."""

from __future__ import annotations

import dataclasses

import pytest

from service.protocol import (
    EMPTY_HEADERS,
    PING,
    AckMessage,
    CancelInvocationMessage,
    CloseMessage,
    CompletionMessage,
    HandshakeRequest,
    InvocationMessage,
    MessageType,
    PingMessage,
    SequenceMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    TransferFormat,
    is_trackable,
)


def test_message_type_numbers_match_the_spec() -> None:
    assert [(t.name, t.value) for t in MessageType] == [
        ("INVOCATION", 1),
        ("STREAM_ITEM", 2),
        ("COMPLETION", 3),
        ("STREAM_INVOCATION", 4),
        ("CANCEL_INVOCATION", 5),
        ("PING", 6),
        ("CLOSE", 7),
        ("ACK", 8),
        ("SEQUENCE", 9),
    ]


def test_transfer_format_values_and_wire_names() -> None:
    assert TransferFormat.TEXT.value == 1
    assert TransferFormat.BINARY.value == 2
    assert TransferFormat.TEXT.wire_name == "Text"
    assert TransferFormat.BINARY.wire_name == "Binary"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (InvocationMessage("m", ()), MessageType.INVOCATION),
        (StreamInvocationMessage("1", "m", ()), MessageType.STREAM_INVOCATION),
        (StreamItemMessage("1", None), MessageType.STREAM_ITEM),
        (CompletionMessage.void("1"), MessageType.COMPLETION),
        (CancelInvocationMessage("1"), MessageType.CANCEL_INVOCATION),
        (PING, MessageType.PING),
        (CloseMessage(), MessageType.CLOSE),
        (AckMessage(1), MessageType.ACK),
        (SequenceMessage(1), MessageType.SEQUENCE),
    ],
)
def test_each_message_knows_its_type(message: object, expected: MessageType) -> None:
    assert message.message_type is expected  # type: ignore[attr-defined]


def test_defaults() -> None:
    invocation = InvocationMessage("Send", (1, "a"))
    assert invocation.invocation_id is None
    assert invocation.headers is EMPTY_HEADERS
    assert invocation.stream_ids == ()
    assert StreamItemMessage("1", 2).headers is EMPTY_HEADERS
    assert CloseMessage() == CloseMessage(None, allow_reconnect=False)


def test_empty_headers_are_shared_and_read_only() -> None:
    assert InvocationMessage("a", ()).headers is InvocationMessage("b", ()).headers
    with pytest.raises(TypeError):
        EMPTY_HEADERS["x"] = "y"  # type: ignore[index]


def test_messages_are_frozen_and_slotted() -> None:
    message = InvocationMessage("Send", ())
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.target = "other"  # type: ignore[misc]
    assert not hasattr(message, "__dict__")


def test_completion_constructors() -> None:
    assert CompletionMessage.with_result("1", None) == CompletionMessage("1", None, None, True)
    assert CompletionMessage.with_result("1", 5).result == 5
    assert CompletionMessage.with_error("1", "boom") == CompletionMessage("1", error="boom")
    void = CompletionMessage.void("1")
    assert (void.error, void.result, void.has_result) == (None, None, False)


def test_completion_refuses_error_and_result_together() -> None:
    with pytest.raises(ValueError, match="both an error and a result"):
        CompletionMessage("1", error="x", result=1, has_result=True)


def test_ping_constant() -> None:
    assert PingMessage() == PING


@pytest.mark.parametrize(
    ("message", "trackable"),
    [
        (InvocationMessage("m", ()), True),
        (StreamInvocationMessage("1", "m", ()), True),
        (StreamItemMessage("1", None), True),
        (CompletionMessage.void("1"), True),
        (CancelInvocationMessage("1"), True),
        (PING, False),
        (CloseMessage(), False),
        (AckMessage(1), False),
        (SequenceMessage(1), False),
    ],
)
def test_is_trackable(message: object, trackable: bool) -> None:
    assert is_trackable(message) is trackable  # type: ignore[arg-type]


def test_handshake_request() -> None:
    assert HandshakeRequest("json", 1) == HandshakeRequest(protocol="json", version=1)
