"""What one log line costs the service: ``event.delivered``, the line it writes per event at INFO.

``python -m bench.log_cost`` configures logging as ``python -m service`` does (``service.logs``), with
stderr sent to ``/dev/null``, logs the line N times, and prints the process's CPU per line (the log
writer thread's share included) and the logging thread's alone (what the event loop pays; the
writer runs on another core when there is one), net of the pacing loop's own cost:

- per format (JSON, console), and below the level (``LOG_LEVEL=WARNING``: what a disabled line costs);
- the service's way (structlog renders the line and hands it to the log writer thread,
  ``service.log_writer``) or the way before (through the standard library's ``Logger``, ``LogRecord``
  and formatter, and written in place by a ``StreamHandler``, a system call per line);
- back to back (a backlog) or paced, one line per ``--pace-ms`` with the thread asleep in between
  (a steady rate: each line comes alone, to cold caches).

Each row runs in a fresh process, the rows interleaved ``--repeat`` times: in one process, whichever
configuration ran first read slower.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import structlog

from config.settings import LogFormat
from service.log_writer import BackgroundLogHandler
from service.logs import configure_logging

__all__ = ["LineCost", "line_cost", "main"]

# The fields of ``consumers.handoff``'s event.delivered line, as a W1 event gives them.
_FIELDS = {
    "messageId": "2f0c6a1e-8d0e-4b55-9d51-0c8c6f0a8b11",
    "routingKey": "recommendation.ready.north-america",
    "type": "RecommendationReady",
    "jobId": "5b1e0f0e-2f4c-4d8e-9a51-3c1f6f0a8b12",
    "region": "north-america",
    "requestId": "9c2d7e1a-4b3f-4e6a-8d2c-1f0e5a6b7c8d",
    "position": "0:12345",
    "connections": 10,
}


WRITERS = ("thread", "in-place")


@dataclass(frozen=True, slots=True)
class LineCost:
    fmt: str
    level: str
    writer: str
    pace_ms: float  # 0: back to back
    lines: int
    cpu_us: float  # CPU of the process per line (every thread), best of the rounds
    caller_us: float  # CPU of the logging thread alone per line: what the event loop would pay

    def row(self) -> str:
        pacing = f"one per {self.pace_ms:g} ms" if self.pace_ms else "back to back"
        return (
            f"| {self.fmt} | {self.level} | {self.writer} | {pacing} | {self.lines:,} "
            f"| {self.caller_us:.1f} | {self.cpu_us:.1f} |"
        )


def line_cost(
    fmt: LogFormat, level: str, lines: int, *, writer: str = "thread", pace_ms: float = 0.0, rounds: int = 5
) -> LineCost:
    """CPU of this process per ``event.delivered`` line logged at INFO under ``level``."""
    try:
        with open(os.devnull, "w", encoding="utf-8") as null, contextlib.redirect_stderr(null):
            configure_logging(level, fmt, through_stdlib=writer == "in-place")
            root = logging.getLogger()
            (handler,) = root.handlers
            assert isinstance(handler, BackgroundLogHandler)
            if writer == "in-place":
                in_place = logging.StreamHandler(null)
                in_place.setFormatter(handler.formatter)
                handler.close()
                root.handlers[:] = [in_place]
            log = structlog.get_logger("consumers.handoff")
            best, best_caller = float("inf"), float("inf")
            for _ in range(rounds):
                pacing, pacing_caller = _pacing_cost(lines, pace_ms)
                started, started_caller = time.process_time(), time.thread_time()
                for _ in range(lines):
                    log.info("event.delivered", **_FIELDS)
                    if pace_ms:
                        time.sleep(pace_ms / 1000)
                root.handlers[0].flush()
                best = min(best, (time.process_time() - started - pacing) / lines)
                best_caller = min(best_caller, (time.thread_time() - started_caller - pacing_caller) / lines)
            for used in root.handlers:
                used.close()  # written out while /dev/null is still open
    finally:
        configure_logging("WARNING", LogFormat.CONSOLE)  # to the real stderr again
    return LineCost(
        fmt=fmt.value,
        level=level,
        writer=writer,
        pace_ms=pace_ms,
        lines=lines,
        cpu_us=best * 1e6,
        caller_us=best_caller * 1e6,
    )


def _pacing_cost(lines: int, pace_ms: float) -> tuple[float, float]:
    """CPU (process, this thread) of the paced loop without the log call: subtracted from the figures."""
    if not pace_ms:
        return 0.0, 0.0
    started, started_caller = time.process_time(), time.thread_time()
    for _ in range(lines):
        time.sleep(pace_ms / 1000)
    return time.process_time() - started, time.thread_time() - started_caller


def _rows(pace_ms: float) -> list[tuple[LogFormat, str, str, float]]:
    return [
        (LogFormat.JSON, "INFO", "thread", 0.0),
        (LogFormat.JSON, "INFO", "in-place", 0.0),
        (LogFormat.JSON, "INFO", "thread", pace_ms),
        (LogFormat.JSON, "INFO", "in-place", pace_ms),
        (LogFormat.CONSOLE, "INFO", "thread", 0.0),
        (LogFormat.JSON, "WARNING", "thread", 0.0),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.log_cost", description=__doc__)
    parser.add_argument("--lines", type=int, default=20_000, help="lines per round (5 rounds, best kept)")
    parser.add_argument("--paced-lines", type=int, default=2_000, help="lines per paced round")
    parser.add_argument("--pace-ms", type=float, default=1.0, help="ms between paced lines")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of the rows, interleaved")
    parser.add_argument("--row", type=int, help=argparse.SUPPRESS)  # one row, in this process
    args = parser.parse_args(argv)
    rows = _rows(args.pace_ms)
    if args.row is not None:
        fmt, level, writer, pace = rows[args.row]
        lines = args.paced_lines if pace else args.lines
        print(line_cost(fmt, level, lines, writer=writer, pace_ms=pace).row(), flush=True)
        return 0
    # Each row in a fresh process, the rows interleaved: whichever ran first in one process read
    # slower than the same row run later (bench/NOTES.md, issue 12 — eleventh pass).
    print("| format | LOG_LEVEL | written by | lines come | lines | µs/line: logging thread | process |")
    print("|---|---|---|---|---|---|---|", flush=True)
    passed = [f"--lines={args.lines}", f"--paced-lines={args.paced_lines}", f"--pace-ms={args.pace_ms}"]
    for _ in range(args.repeat):
        for row in range(len(rows)):
            subprocess.run([sys.executable, "-m", "bench.log_cost", *passed, f"--row={row}"], check=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
