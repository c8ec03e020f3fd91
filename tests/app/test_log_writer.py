"""Logging never waits for stderr.

A stderr that nobody drains (a stalled log shipper, a parent that pipes and never reads) fills its pipe
after 64 KiB; a handler that writes in the logging thread then blocks the event loop, and the instance
stops serving. The log writer thread takes the writes; a full buffer drops and counts instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path

import aiohttp
from prometheus_client import REGISTRY

from config.settings import LogFormat
from service.log_writer import DROPPED_NOTICE, BackgroundLogHandler
from service.logs import configure_logging
from tests.support.instances import free_port, service_process_env, wait_healthy
from tests.support.session_logging import configure_session_logging

ROOT = Path(__file__).resolve().parents[2]


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("test", logging.INFO, __file__, 1, message, None, None)


def _dropped_total() -> float:
    return REGISTRY.get_sample_value("realtime_log_records_dropped_total") or 0.0


def _emit_in_thread(handler: logging.Handler, records: list[logging.LogRecord]) -> bool:
    """Emit every record from another thread; whether that thread came back (a blocked write would not)."""
    done = threading.Event()

    def emit_all() -> None:
        for record in records:
            handler.handle(record)
        done.set()

    threading.Thread(target=emit_all, daemon=True).start()
    return done.wait(30)


def test_lines_are_written_in_order_one_per_record() -> None:
    stream = io.StringIO()
    handler = BackgroundLogHandler(stream, capacity=100)
    for i in range(50):
        handler.handle(_record(f"line {i}"))
    handler.flush()
    assert stream.getvalue().splitlines() == [f"line {i}" for i in range(50)]
    assert handler.dropped == 0
    handler.close()


class StuckStream(io.StringIO):
    """A stderr nobody reads: a write blocks until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def write(self, text: str) -> int:
        self.entered.set()
        assert self.release.wait(30), "the test never released the stream"
        return super().write(text)


def test_with_stderr_stuck_logging_returns_at_once_drops_beyond_the_buffer_and_says_so_later() -> None:
    stream = StuckStream()
    capacity = 20
    handler = BackgroundLogHandler(stream, capacity=capacity)
    before = _dropped_total()
    handler.handle(_record("0000"))
    assert stream.entered.wait(30)  # the writer is in its write, and stays there
    records = [_record(f"{i:04d}") for i in range(1, 1_000)]
    assert _emit_in_thread(handler, records), "logging blocked on a stderr nobody reads"
    assert handler.dropped == 999 - capacity
    assert _dropped_total() - before == 999 - capacity

    stream.release.set()  # someone reads again: the writer writes what it kept, then how many it lost
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert lines[: capacity + 1] == [f"{i:04d}" for i in range(capacity + 1)]
    assert lines[capacity + 1 :] == [handler._notice(999 - capacity)]
    handler.close()


class _NoticeFails(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        if record.msg == DROPPED_NOTICE:
            raise RuntimeError("a formatter that fails on the notice")
        return super().format(record)


def test_a_notice_that_fails_to_format_is_left_out_and_the_lines_are_written() -> None:
    stream = StuckStream()
    handler = BackgroundLogHandler(stream, capacity=1)
    handler.setFormatter(_NoticeFails())
    handler.handle(_record("a"))
    assert stream.entered.wait(30)  # the writer is stuck writing "a"
    handler.handle(_record("b"))  # queued
    handler.handle(_record("c"))  # dropped: the queue is full
    stream.release.set()
    handler.flush()  # "b" goes with the notice for "c", which fails: "b" is written without it
    handler.handle(_record("d"))
    handler.flush()
    assert stream.getvalue().splitlines() == ["a", "b", "d"]
    assert handler.dropped == 1
    handler.close()


def test_the_notice_is_a_structured_line_with_the_count() -> None:
    configure_logging("INFO", LogFormat.JSON)
    try:
        handler = logging.getLogger().handlers[0]
        assert isinstance(handler, BackgroundLogHandler)
        notice = json.loads(handler._notice(7))
        assert (notice["event"], notice["dropped"], notice["level"]) == (DROPPED_NOTICE, 7, "warning")
    finally:
        configure_session_logging()


def test_a_broken_stderr_counts_its_lines_as_dropped_and_raises_nothing() -> None:
    read_fd, write_fd = os.pipe()
    os.close(read_fd)  # EPIPE on every write (Python ignores SIGPIPE)
    stream = open(write_fd, "w", encoding="utf-8")  # noqa: SIM115 - closed by the test
    handler = BackgroundLogHandler(stream, capacity=100)
    handler.handle(_record("lost"))
    handler.flush()
    assert handler.dropped == 1
    handler.close()
    with contextlib.suppress(OSError):
        stream.close()


def test_closing_with_stderr_stuck_gives_up_after_the_timeout() -> None:
    """Exit must not hang on a stderr nobody reads: the writer is a daemon thread, close() waits a while."""
    stream = StuckStream()
    handler = BackgroundLogHandler(stream, capacity=10)
    assert _emit_in_thread(handler, [_record("y") for _ in range(20)])
    assert stream.entered.wait(30)
    closed = threading.Event()

    def close() -> None:
        handler.close(timeout=0.5)
        closed.set()

    threading.Thread(target=close, daemon=True).start()
    assert closed.wait(30), "close() waited for a stderr nobody reads"
    stream.release.set()


async def test_a_service_whose_stderr_nobody_reads_keeps_serving_and_counts_what_it_dropped() -> None:
    """The service at LOG_LEVEL=INFO logs every request it serves (``http.access``); a few hundred
    fill a pipe nobody reads. Before the log writer, the next log call blocked the event loop for good."""
    port = free_port()
    env = service_process_env(
        HTTP_HOST="127.0.0.1",
        HTTP_PORT=str(port),
        AUTH_DEV_MODE="true",
        RABBITMQ_URL="amqp://guest:guest@127.0.0.1:1/",  # no broker: the hub serves regardless
        INSTANCE_ID=f"log-writer-{port}",
        LOG_LEVEL="INFO",
        LOG_FORMAT="json",
        LOG_BUFFER_RECORDS="100",
    )
    read_fd, write_fd = os.pipe()  # not asyncio's pipe: that one reads into a buffer of its own
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service", env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=write_fd
        )
    finally:
        os.close(write_fd)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            await wait_healthy(session, base, process)
            for _ in range(1_500):  # the 64 KiB pipe is full after a few hundred lines of access log
                async with asyncio.timeout(10):
                    async with session.get(f"{base}/healthz") as response:
                        assert response.status == 200
            async with asyncio.timeout(10):
                async with session.get(f"{base}/metrics") as response:
                    metrics = await response.text()
            dropped = next(
                float(row.split()[1])
                for row in metrics.splitlines()
                if row.startswith("realtime_log_records_dropped_total ")
            )
            assert dropped >= 300

            # A reader comes back: the log says how many records it lost (in one notice or several: each
            # write says what was dropped before it).
            reading = asyncio.create_task(asyncio.to_thread(_read_notices, read_fd, dropped))
            async with asyncio.timeout(30):
                while not reading.done():  # each request logs a line, which gets the writer going again
                    async with session.get(f"{base}/healthz") as response:
                        assert response.status == 200
                    await asyncio.wait([reading], timeout=0.2)
            assert reading.result() >= dropped
    finally:
        process.terminate()
        async with asyncio.timeout(30):
            await asyncio.to_thread(_read_to_end, read_fd)  # the exit's last lines, then the pipe closes
            await process.wait()
        os.close(read_fd)


def _read_to_end(read_fd: int) -> None:
    while os.read(read_fd, 65536):
        pass


def _read_notices(read_fd: int, dropped: float) -> int:
    """The records the pipe's ``log.records_dropped`` lines report, read until they add up to ``dropped``."""
    reported = 0
    with open(read_fd, "rb", closefd=False) as lines:
        for line in lines:
            if DROPPED_NOTICE.encode() in line:
                reported += int(json.loads(line)["dropped"])
                if reported >= dropped:
                    return reported
    raise AssertionError(f"stderr closed with {reported} of {dropped} dropped records reported")
