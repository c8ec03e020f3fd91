"""The handshake: parse the first record, keep what follows, choose the protocol, encode the reply."""

from __future__ import annotations

import orjson
import pytest

from service.protocol import (
    HANDSHAKE_OK,
    JSON_PROTOCOL,
    MESSAGEPACK_PROTOCOL,
    PING,
    SUPPORTED_PROTOCOLS,
    HandshakeCanceledError,
    HandshakeError,
    HandshakeRequest,
    InvalidHandshakeError,
    InvocationMessage,
    ProtocolError,
    TransferFormat,
    UnsupportedProtocolError,
    get_protocol,
    handshake_error_response,
    parse_handshake_request,
    select_protocol,
)

UNEXPECTED = "An unexpected error occurred during connection handshake."


def test_parse_json_handshake() -> None:
    data = b'{"protocol":"json","version":1}\x1e'
    assert parse_handshake_request(data, 32768) == (HandshakeRequest("json", 1), len(data))


def test_parse_accepts_bytearray_any_order_and_unknown_properties() -> None:
    data = bytearray(b'{"version":2,"extra":{"x":[1]},"protocol":"messagepack"}\x1e')
    assert parse_handshake_request(data, None) == (HandshakeRequest("messagepack", 2), len(data))


def test_incomplete_handshake_returns_none() -> None:
    assert parse_handshake_request(b"", 100) is None
    assert parse_handshake_request(b'{"protocol":"json",', 100) is None


def test_handshake_followed_by_hub_messages_in_the_same_buffer() -> None:
    # Clients may send the handshake and their first messages together; only the handshake is consumed.
    handshake = b'{"protocol":"json","version":1}\x1e'
    rest = b'{"type":6}\x1e{"target":"Echo","arguments":["hi"],"invocationId":"0","type":1}\x1e{"ty'
    parsed = parse_handshake_request(handshake + rest, 32768)
    assert parsed is not None
    request, consumed = parsed
    assert consumed == len(handshake)
    protocol = select_protocol(request)
    reader = protocol.new_reader(32768)
    reader.feed((handshake + rest)[consumed:])
    assert reader.next_message() == PING
    assert reader.next_message() == InvocationMessage("Echo", ("hi",), "0")
    assert reader.next_message() is None
    assert reader.buffered_size == 4


def test_msgpack_handshake_followed_by_binary_messages() -> None:
    handshake = b'{"protocol":"messagepack","version":1}\x1e'
    data = handshake + b"\x02\x91\x06"
    parsed = parse_handshake_request(data, 32768)
    assert parsed is not None
    request, consumed = parsed
    reader = select_protocol(request).new_reader(32768)
    reader.feed(data[consumed:])
    assert reader.next_message() == PING


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        (b"", "Error reading JSON"),
        (b"{", "Error reading JSON"),
        (b"\xff", "Error reading JSON"),
        (b"[]", "Expected a JSON object."),
        (b'{"version":1}', "Missing required property 'protocol'."),
        (b'{"protocol":null,"version":1}', "Missing required property 'protocol'."),
        (b'{"protocol":"json"}', "Missing required property 'version'."),
        (b'{"protocol":"json","version":null}', "Missing required property 'version'."),
        (b'{"protocol":1,"version":1}', "Expected 'protocol' to be of type String."),
        (b'{"protocol":"json","version":"1"}', "Expected 'version' to be of type Number."),
        (b'{"protocol":"json","version":1.0}', "Expected 'version' to be of type Number."),
        (b'{"protocol":"json","version":true}', "Expected 'version' to be of type Number."),
        (b'{"protocol":"json","version":2147483648}', "Expected 'version' to be a 32-bit integer."),
        (b'{"type":6}', "Missing required property 'protocol'."),
    ],
)
def test_malformed_handshake(record: bytes, problem: str) -> None:
    with pytest.raises(InvalidHandshakeError) as info:
        parse_handshake_request(record + b"\x1e", 32768)
    error = info.value
    assert isinstance(error, HandshakeError)
    assert isinstance(error, ProtocolError)
    assert error.reply == UNEXPECTED
    assert isinstance(error, InvalidHandshakeError)
    assert error.problem.startswith(problem)


def test_oversized_handshake_is_canceled() -> None:
    with pytest.raises(HandshakeCanceledError) as info:
        parse_handshake_request(b"x" * 101, 100)
    assert info.value.reply == "Handshake was canceled."


def test_handshake_limit_counts_the_separator() -> None:
    record = b'{"protocol":"json","version":1}\x1e'
    assert parse_handshake_request(record, len(record)) is not None
    assert parse_handshake_request(record[:-1], len(record) - 1) is None  # could still end next byte
    with pytest.raises(HandshakeCanceledError):
        parse_handshake_request(record, len(record) - 1)


def test_handshake_ok_and_error_responses() -> None:
    assert HANDSHAKE_OK == b"{}\x1e"
    response = handshake_error_response("The protocol 'foo' is not supported.")
    assert response == b'{"error":"The protocol \'foo\' is not supported."}\x1e'
    tricky = 'quote " backslash \\ newline \n unicode é \x00'
    assert orjson.loads(handshake_error_response(tricky)[:-1]) == {"error": tricky}


# --- protocol selection --------------------------------------------------------------------------------


def test_registry() -> None:
    assert dict(SUPPORTED_PROTOCOLS) == {"json": JSON_PROTOCOL, "messagepack": MESSAGEPACK_PROTOCOL}
    assert get_protocol("json") is JSON_PROTOCOL
    assert get_protocol("messagepack") is MESSAGEPACK_PROTOCOL
    # DefaultHubProtocolResolver uses StringComparer.OrdinalIgnoreCase.
    assert get_protocol("JSON") is JSON_PROTOCOL
    assert get_protocol("MessagePack") is MESSAGEPACK_PROTOCOL
    assert get_protocol("foo") is None
    assert get_protocol("") is None


@pytest.mark.parametrize(
    ("request_", "formats", "enabled", "reply"),
    [
        (HandshakeRequest("foo", 1), None, None, "The protocol 'foo' is not supported."),
        (HandshakeRequest("", 1), None, None, "The protocol '' is not supported."),
        (HandshakeRequest("messagepack", 1), None, ["json"], "The protocol 'messagepack' is not supported."),
        (
            HandshakeRequest("json", 3),
            None,
            None,
            "The server does not support version 3 of the 'json' protocol.",
        ),
        (
            HandshakeRequest("messagepack", 1),
            [TransferFormat.TEXT],
            None,
            "Cannot use the 'messagepack' protocol on the current transport. "
            "The transport does not support 'Binary' transfer format.",
        ),
    ],
)
def test_select_protocol_rejections(
    request_: HandshakeRequest, formats: list[TransferFormat] | None, enabled: list[str] | None, reply: str
) -> None:
    kwargs: dict[str, object] = {"enabled": enabled}
    if formats is not None:
        kwargs["transfer_formats"] = formats
    with pytest.raises(UnsupportedProtocolError) as info:
        select_protocol(request_, **kwargs)  # type: ignore[arg-type]
    assert info.value.reply == reply
    assert str(info.value) == reply


@pytest.mark.parametrize("version", [-5, 0, 1, 2])
def test_select_protocol_accepts_versions_up_to_2(version: int) -> None:
    assert (
        select_protocol(HandshakeRequest("json", version), transfer_formats=[TransferFormat.TEXT])
        is JSON_PROTOCOL
    )
    assert select_protocol(HandshakeRequest("messagepack", version)) is MESSAGEPACK_PROTOCOL
