"""Every JSON log line is one JSON object, whatever the values logged (orjson renders the lines; what it
refuses goes through the standard library's encoder instead of being lost)."""

from __future__ import annotations

import io
import json
import logging

import structlog

from config.settings import LogFormat
from service.log_writer import BackgroundLogHandler
from service.logs import configure_logging


def _logged_json(**fields: object) -> dict[str, object]:
    configure_logging("INFO", LogFormat.JSON)
    try:
        root = logging.getLogger()
        handler = root.handlers[0]
        assert isinstance(handler, BackgroundLogHandler)
        out = io.StringIO()
        lines = BackgroundLogHandler(out, capacity=10)
        lines.setFormatter(handler.formatter)
        handler.close()
        root.handlers[:] = [lines]
        structlog.get_logger("test.lines").info("test.logged", **fields)
        lines.flush()
        lines.close()
        (line,) = out.getvalue().splitlines()
        parsed: dict[str, object] = json.loads(line)
        return parsed
    finally:
        configure_logging("DEBUG", LogFormat.CONSOLE)  # the session's configuration (tests/conftest.py)


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
