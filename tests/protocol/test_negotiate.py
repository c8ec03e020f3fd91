"""Negotiate: connection ids, version selection, the exact response body, query flags."""

from __future__ import annotations

import re

import orjson
import pytest

from service.protocol import (
    DEFAULT_TRANSPORTS,
    LONG_POLLING,
    WEBSOCKETS,
    AvailableTransport,
    NegotiateError,
    ProtocolError,
    negotiate_error_response,
    negotiate_response,
    new_connection_id,
    parse_bool_query,
    parse_negotiate_version,
)

ALL_TRANSPORTS_JSON = (
    '"availableTransports":['
    '{"transport":"WebSockets","transferFormats":["Text","Binary"]},'
    '{"transport":"ServerSentEvents","transferFormats":["Text"]},'
    '{"transport":"LongPolling","transferFormats":["Text","Binary"]}]'
)


def test_connection_ids_are_22_url_safe_chars_and_unique() -> None:
    ids = {new_connection_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{22}", connection_id) for connection_id in ids)


@pytest.mark.parametrize(
    ("raw", "version"),
    [(None, 0), ("0", 0), ("1", 1), ("2", 1), ("999", 1), (" 1 ", 1), ("+1", 1), ("01", 1)],
)
def test_parse_negotiate_version(raw: str | None, version: int) -> None:
    assert parse_negotiate_version(raw) == version


@pytest.mark.parametrize("raw", ["", "abc", "1.0", "1_0", "١", "1 2", "2147483648", "0x1", "1,1"])
def test_non_integer_negotiate_version(raw: str) -> None:
    with pytest.raises(NegotiateError) as info:
        parse_negotiate_version(raw)
    assert str(info.value) == "The client requested a non-integer protocol version."
    assert isinstance(info.value, ProtocolError)


def test_negative_negotiate_version() -> None:
    with pytest.raises(NegotiateError) as info:
        parse_negotiate_version("-1")
    assert (
        str(info.value) == "The client requested version '-1', but the server does not support this version."
    )


def test_minimum_negotiate_version() -> None:
    with pytest.raises(NegotiateError, match="requested version '0'"):
        parse_negotiate_version(None, minimum_version=1)
    assert parse_negotiate_version("1", minimum_version=1) == 1


def test_negotiate_response_version_1() -> None:
    body = negotiate_response(
        connection_id="A",
        connection_token="T",
        negotiate_version=1,
        transports=DEFAULT_TRANSPORTS,
        use_stateful_reconnect=False,
    )
    assert (
        body
        == (
            '{"negotiateVersion":1,"connectionId":"A","connectionToken":"T",' + ALL_TRANSPORTS_JSON + "}"
        ).encode()
    )


def test_negotiate_response_version_0_has_no_token() -> None:
    body = negotiate_response(
        connection_id="A",
        connection_token="T",
        negotiate_version=0,
        transports=DEFAULT_TRANSPORTS,
        use_stateful_reconnect=False,
    )
    assert body == ('{"negotiateVersion":0,"connectionId":"A",' + ALL_TRANSPORTS_JSON + "}").encode()
    assert parse_negotiate_version(None) == 0


def test_negotiate_response_stateful_reconnect_comes_first() -> None:
    body = negotiate_response(
        connection_id="A",
        connection_token="T",
        negotiate_version=1,
        transports=[WEBSOCKETS],
        use_stateful_reconnect=True,
    )
    assert body == (
        b'{"useStatefulReconnect":true,"negotiateVersion":1,"connectionId":"A","connectionToken":"T",'
        b'"availableTransports":[{"transport":"WebSockets","transferFormats":["Text","Binary"]}]}'
    )


def test_negotiate_response_restricted_transports() -> None:
    body = orjson.loads(
        negotiate_response(
            connection_id="A",
            connection_token=None,
            negotiate_version=0,
            transports=[LONG_POLLING],
            use_stateful_reconnect=False,
        )
    )
    assert body == {
        "negotiateVersion": 0,
        "connectionId": "A",
        "availableTransports": [{"transport": "LongPolling", "transferFormats": ["Text", "Binary"]}],
    }


def test_negotiate_version_1_requires_a_token() -> None:
    with pytest.raises(ValueError, match="token"):
        negotiate_response(
            connection_id="A",
            connection_token=None,
            negotiate_version=1,
            transports=DEFAULT_TRANSPORTS,
            use_stateful_reconnect=False,
        )


@pytest.mark.parametrize(
    ("name", "formats"),
    [
        ("WebSocket", ("Text",)),
        ("WebSockets", ()),
        ("WebSockets", ("text",)),
        ("LongPolling", ("Binary", "X")),
    ],
)
def test_available_transport_validates_names(name: str, formats: tuple[str, ...]) -> None:
    with pytest.raises(ValueError, match=r"transport|formats"):
        AvailableTransport(name, formats)


def test_negotiate_error_response() -> None:
    assert negotiate_error_response("The client requested a non-integer protocol version.") == (
        b'{"error":"The client requested a non-integer protocol version."}'
    )
    assert orjson.loads(negotiate_error_response('a "quoted" \\ text')) == {"error": 'a "quoted" \\ text'}


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        (None, False),
        ("", False),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        (" true ", True),
        ("false", False),
        ("1", False),
        ("yes", False),
        ("truex", False),
    ],
)
def test_parse_bool_query(raw: str | None, value: bool) -> None:
    assert parse_bool_query(raw) is value
