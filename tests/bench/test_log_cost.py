"""``python -m bench.log_cost``: every configuration is measured, and logging is left as it was found
(writing to the real stderr). Asserts what a correct measurement must show, never a timing."""

from __future__ import annotations

import logging
import sys

import pytest

from bench.log_cost import WRITERS, line_cost, main
from config.settings import LogFormat
from service.log_writer import BackgroundLogHandler
from tests.support.session_logging import configure_session_logging


@pytest.mark.parametrize("writer", WRITERS)
@pytest.mark.parametrize("pace_ms", [0.0, 0.5])
def test_each_writer_is_measured_and_logging_is_restored(writer: str, pace_ms: float) -> None:
    try:
        cost = line_cost(LogFormat.JSON, "INFO", 50, writer=writer, pace_ms=pace_ms, rounds=1)
        assert (cost.writer, cost.pace_ms, cost.lines) == (writer, pace_ms, 50)
        assert cost.cpu_us > 0
        assert cost.caller_us > 0 or pace_ms  # paced: net of the pacing loop, which can be the larger
        (handler,) = logging.getLogger().handlers
        assert isinstance(handler, BackgroundLogHandler)
        assert handler._stream is sys.stderr
    finally:
        configure_session_logging()


def test_the_table_has_every_row_each_from_its_own_process(capfd: pytest.CaptureFixture[str]) -> None:
    assert main(["--lines=20", "--paced-lines=5", "--pace-ms=0.5", "--repeat=1"]) == 0
    rows = [
        line
        for line in capfd.readouterr().out.splitlines()
        if line.startswith("| json") or line.startswith("| console")
    ]
    assert [row.split(" | ")[1:4] for row in rows] == [
        ["INFO", "thread", "back to back"],
        ["INFO", "in-place", "back to back"],
        ["INFO", "thread", "one per 0.5 ms"],
        ["INFO", "in-place", "one per 0.5 ms"],
        ["INFO", "thread", "back to back"],
        ["WARNING", "thread", "back to back"],
    ]
