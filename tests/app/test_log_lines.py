"""Every JSON log line is one JSON object, whatever the values logged (orjson renders the lines; what it
refuses goes through the standard library's encoder instead of being lost), and the service's way of
writing structlog's events (structlog renders them itself) gives the same lines as the tests' way
(through the standard library, for ``caplog``)."""

from __future__ import annotations

import io
import json
import logging
from contextlib import redirect_stderr

import pytest
import structlog

from config.settings import LogFormat
from service.logs import configure_logging
from tests.support.session_logging import configure_session_logging


def _logged(fmt: LogFormat, fields: dict[str, object], *, through_stdlib: bool = False) -> str:
    """The line ``test.logged`` gives with ``fields``, configured as the service does (or as the tests)."""
    out = io.StringIO()
    try:
        with redirect_stderr(out):
            configure_logging("INFO", fmt, through_stdlib=through_stdlib)
            # A new logger each time: structlog caches a logger's configuration at its first use.
            structlog.get_logger("test.lines").info("test.logged", **fields)
            handler = logging.getLogger().handlers[0]
            handler.flush()
            handler.close()
    finally:
        configure_session_logging()
    (line,) = out.getvalue().splitlines()
    return line


def _logged_json(**fields: object) -> dict[str, object]:
    parsed: dict[str, object] = json.loads(_logged(LogFormat.JSON, fields))
    return parsed


def test_plain_fields_are_rendered_as_they_are() -> None:
    line = _logged_json(jobId="job-1", connections=10, latencyMs=1.5, caughtUp=True, note=None)
    assert line["event"] == "test.logged"
    assert (line["jobId"], line["connections"], line["latencyMs"], line["caughtUp"], line["note"]) == (
        "job-1",
        10,
        1.5,
        True,
        None,
    )
    assert (line["level"], line["logger"]) == ("info", "test.lines")


def test_values_orjson_refuses_are_still_logged() -> None:
    line = _logged_json(offset=2**70, byKey={1: "a"}, thing=object())
    assert line["offset"] == 2**70  # beyond 64 bits
    assert line["byKey"] == {"1": "a"}  # a key that is not a string
    assert str(line["thing"]).startswith("<object object at")  # not JSON at all: its repr


def test_a_token_logged_as_a_field_is_redacted_on_the_service_s_way_too() -> None:
    line = _logged_json(url="/hub?id=secret-connection-token&access_token=eyJhbGciOiJSUzI1NiJ9.e30.c2ln")
    assert "secret-connection-token" not in str(line["url"])
    assert "eyJ" not in str(line["url"])


@pytest.mark.parametrize("fmt", [LogFormat.JSON, LogFormat.CONSOLE])
def test_the_service_s_way_and_the_tests_way_write_the_same_line(fmt: LogFormat) -> None:
    fields: dict[str, object] = {"jobId": "job-1", "connections": 10, "region": "emea"}
    native = _logged(fmt, fields)
    stdlib = _logged(fmt, fields, through_stdlib=True)
    # Identical but for the timestamp, which both put first (console) or last (JSON).
    if fmt is LogFormat.JSON:
        assert {**json.loads(native), "timestamp": 0} == {**json.loads(stdlib), "timestamp": 0}
        assert list(json.loads(native)) == list(json.loads(stdlib))  # the same order of keys
    else:
        assert native.split(" ", 1)[1] == stdlib.split(" ", 1)[1]


@pytest.mark.parametrize("through_stdlib", [False, True])
def test_a_long_value_is_cut_so_one_client_cannot_write_huge_lines(through_stdlib: bool) -> None:
    """A client's method name, protocol name, Origin header or Close text went into INFO lines whole:
    a 20,000-character method name gave a 40 KB line (log shippers split lines at 16 KB)."""
    line = json.loads(
        _logged(LogFormat.JSON, {"method": "m" * 20_000, "short": "ok"}, through_stdlib=through_stdlib)
    )
    assert line["method"] == "m" * 1000 + "…(+19000 chars)"
    assert line["short"] == "ok"


def test_a_broker_library_repeating_itself_during_an_outage_writes_one_line_a_minute() -> None:
    """aiormq logs an ERROR and aio-pika a WARNING on every reconnect attempt (every ~2 s): an outage
    of an hour wrote ~3,600 lines per instance and set off every ERROR-based alert of the fleet."""
    clock = [1000.0]
    out = io.StringIO()
    try:
        with redirect_stderr(out):
            configure_logging("INFO", LogFormat.JSON, clock=lambda: clock[0])
            library = logging.getLogger("aiormq.connection")
            for _ in range(30):  # a minute of attempts, one every 2 s
                library.error("error when creating transport: %r", ConnectionRefusedError(111))
                clock[0] += 2.0
            library.error("error when creating transport: %r", ConnectionRefusedError(111))
            logging.getLogger("aio_pika.robust_connection").warning("Connection attempt failed")
            handler = logging.getLogger().handlers[0]
            handler.flush()
            handler.close()
    finally:
        configure_session_logging()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["logger"], line.get("suppressed")) for line in lines] == [
        ("aiormq.connection", None),
        ("aiormq.connection", 29),  # the next minute's line says how many were left out
        ("aio_pika.robust_connection", None),  # another message: not held back by the first
    ]
