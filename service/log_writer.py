"""Log lines are written by a thread of their own, so that a slow stderr never stalls the event loop.

Why: a ``StreamHandler`` writes in the thread that logs, the event loop's. When stderr is a pipe that
is drained slowly or not at all (a stalled log shipper, a parent process that never reads it), the
pipe's buffer (64 KiB on Linux, pipe(7)) fills, and from then on every log call blocks the loop: every
client of the instance stops being served, for as long as nothing reads. Python's logging cookbook
("Dealing with handlers that block") gives the cure this module follows: the logging thread only
formats the line and puts it in a queue; a writer thread does the writes.

The queue is bounded (``LOG_BUFFER_RECORDS``): when it is full, a record is dropped and counted
(``realtime_log_records_dropped_total``) rather than waited for, and once the writer gets going again it
writes a ``log.records_dropped`` line saying how many it lost. Formatting (and so the redaction of
secrets) stays in the logging thread: a record's arguments are rendered as they were when it was logged.

The writer takes whatever is queued at each wake-up and writes it in one call. While the event loop
keeps the interpreter busy, a thread waits up to the switch interval (5 ms) for the GIL at each step
(``sys.getswitchinterval``), so a writer that wrote one line per wake-up could write only ~200 lines a
second under load; a batch per wake-up keeps up with any rate the loop can log at. And while lines
keep coming it wakes on a timer, not per line (``_LINGER``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from typing import Final, TextIO

from service.metrics import LOG_RECORDS_DROPPED

__all__ = ["DROPPED_NOTICE", "BackgroundLogHandler"]

DROPPED_NOTICE: Final = "log.records_dropped"
_BATCH: Final = 1_000  # lines per write at most: one write of ~0.5 MB, then the writer looks again
# While lines keep coming, the writer wakes every _LINGER and writes what gathered; it is not woken
# per line. At a steady rate each line comes alone, and a wake-up per line cost the process ~100 µs
# a line, more than formatting it; waking every 10 ms ~20 µs, every 50 ms ~8 (``python -m
# bench.log_cost``, bench/NOTES.md). A line reaches stderr at most this much later.
_LINGER: Final = 0.05
_STOP: Final = object()


class BackgroundLogHandler(logging.Handler):
    """Formats in the caller's thread, writes in its own; a full queue drops and counts."""

    def __init__(self, stream: TextIO, capacity: int) -> None:
        super().__init__()
        self._stream = stream
        self._queue: queue.Queue[object] = queue.Queue(maxsize=capacity)
        self.dropped = 0  # records lost since start: the queue was full, or the write failed
        self._reported = 0
        self._counting = threading.Lock()  # not the handler's lock: shutdown holds that while it flushes
        self._writer = threading.Thread(target=self._write_forever, name="log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        if self._queue.full():  # before formatting: a record that would be dropped costs nothing more
            self._drop(1)
            return
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's contract: a record that cannot be formatted is reported, not raised
            self.handleError(record)
            return
        self.put_line(line)

    def put_line(self, line: str) -> None:
        """Queue a finished line (structlog's events come here directly, ``service.logs``)."""
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self._drop(1)

    def flush(self, timeout: float = 2.0) -> None:
        """Wait until what is queued now has been written, at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks and self._writer.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._queue.all_tasks_done.wait(remaining)

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued and stop the writer; give up after ``timeout`` seconds (a stderr that
        nobody reads must not keep the process from exiting: the writer is a daemon thread)."""
        if self._writer.is_alive():
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
            else:
                self._writer.join(timeout)
        super().close()

    def _drop(self, records: int) -> None:
        with self._counting:
            self.dropped += records
        LOG_RECORDS_DROPPED.inc(records)

    def _write_forever(self) -> None:
        while True:
            first = self._queue.get()  # nothing to write: asleep until a line comes
            time.sleep(_LINGER)  # the lines that follow it gather meanwhile
            taken = [first, *self._take(_BATCH - 1)]
            while taken:
                lines = [str(line) for line in taken if line is not _STOP]
                try:
                    self._write(lines)
                except Exception:  # noqa: BLE001 - the writer must outlive any one batch
                    self._drop(len(lines))
                for _ in taken:
                    self._queue.task_done()
                if _STOP in taken:
                    return
                if len(taken) < _BATCH:  # the queue was emptied: let the next lines gather
                    time.sleep(_LINGER)
                taken = self._take(_BATCH)  # none came: back to waiting for one

    def _take(self, most: int) -> list[object]:
        taken: list[object] = []
        while len(taken) < most:
            try:
                taken.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return taken

    def _write(self, lines: list[str]) -> None:
        unreported = self.dropped - self._reported
        if unreported:
            self._reported += unreported
            # A notice that cannot be formatted is left out: the metric has the count.
            with contextlib.suppress(Exception):
                lines.append(self._notice(unreported))
        if not lines:
            return
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # stderr closed or broken: those lines are lost; count them
            self._drop(len(lines))
            self._reported += len(lines)  # no notice for them: it could not be written either

    def _notice(self, dropped: int) -> str:
        """The ``log.records_dropped`` line, rendered as every other line (``dropped`` is its field)."""
        record = logging.LogRecord("service.logs", logging.WARNING, __file__, 0, DROPPED_NOTICE, None, None)
        record.dropped = dropped
        return self.format(record)
