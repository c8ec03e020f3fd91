"""Ask a forked copy of the process whether a full garbage collection would free anything.

A full pass over 10,000 connections' state stops the event loop ~470 ms (bench/NOTES.md, issue 12),
and after connections close it usually frees nothing: their objects go by reference counting. The
parent cannot find that out without paying the pass, but a copy can: ``os.fork()`` gives a child
the same heap (copy-on-write), the child unfreezes and collects it on the other core and writes
back how much it found, and the parent only pays ``fork`` itself (~7 ms at ~770,000 objects,
page tables) and the pass only when the child found garbage worth freeing.

The child must not touch anything the parent shares with it. Before collecting it closes every file
descriptor but its answer pipe — a finalizer of an unreachable socket object then fails on a
closed descriptor instead of writing to, or shutting down, the parent's connection — and it keeps
every signal blocked (a Ctrl-C to the process group must not reach the parent's handlers through
the shared wakeup descriptor). It leaves with ``os._exit`` so no ``atexit`` handler or buffered
stream of the parent runs twice.

The child's collection writes the header of every tracked object, so it copies the pages holding
them: while it runs (~0.5 s at 10,000 connections) the process's memory counts up to twice the
heap. ``GC_FREEZE_PROBE=false`` runs the pass in the service instead.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn

import orjson

__all__ = ["ForkedGcProbe", "GcProbeFailed", "GcProbeResult", "can_fork"]

_ANSWER_LIMIT = 4096
_FORK_WITH_THREADS = r".*multi-threaded, use of fork\(\) may lead to deadlocks"
_TOP_TYPES = 5


class GcProbeFailed(RuntimeError):
    """The forked probe gave no usable answer; the caller should run the pass itself."""


@dataclass(frozen=True, slots=True)
class GcProbeResult:
    collected: int
    """Objects a full pass over the unfrozen heap found unreachable."""
    top_types: tuple[tuple[str, int], ...]
    """The most common types among them, for the operator's log."""


def can_fork() -> bool:
    return hasattr(os, "fork") and hasattr(signal, "pthread_sigmask")


class ForkedGcProbe:
    """One probe at a time: ``start`` forks, ``poll`` (once a heartbeat round) collects the answer."""

    __slots__ = ("_clock", "_fd", "_pid", "_started", "_timeout")

    def __init__(self, *, timeout: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._timeout = timeout
        self._clock = clock
        self._pid = 0
        self._fd = -1
        self._started = 0.0

    @property
    def running(self) -> bool:
        return self._pid != 0

    def start(self) -> bool:
        """Fork the child; False when this process cannot fork now (the caller runs the pass)."""
        if self._pid:
            raise RuntimeError("a probe is already running")
        read_fd, write_fd = os.pipe()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            with warnings.catch_warnings():
                # Python 3.12+ warns when a process with threads forks: a lock another thread held
                # stays held in the child. The child here takes none of ours; one a finalizer waits
                # for leaves it without an answer, and ``poll`` kills it at the timeout.
                warnings.filterwarnings("ignore", message=_FORK_WITH_THREADS, category=DeprecationWarning)
                pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.close(read_fd)
            os.close(write_fd)
            return False
        if pid == 0:  # pragma: no cover - the child's side, seen through its answer
            _collect_in_child(write_fd)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        os.close(write_fd)
        os.set_blocking(read_fd, False)
        self._pid, self._fd, self._started = pid, read_fd, self._clock()
        return True

    def poll(self) -> GcProbeResult | None:
        """The child's answer once it has exited, None while it runs.

        Raises ``GcProbeFailed`` when it exited without an answer or overran the timeout (then it
        is killed)."""
        if not self._pid:
            raise RuntimeError("no probe is running")
        try:
            pid, status = os.waitpid(self._pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere, so it has exited: its answer is in the pipe or not
            pid, status = self._pid, -1
        if pid == 0:
            if self._clock() - self._started <= self._timeout:
                return None
            self.close()
            raise GcProbeFailed(f"the probe process gave no answer in {self._timeout:g} s and was killed")
        answer = self._read_answer()
        self._forget()
        try:
            decoded = orjson.loads(answer)
            return GcProbeResult(
                collected=int(decoded["collected"]),
                top_types=tuple((str(name), int(count)) for name, count in decoded["types"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise GcProbeFailed(f"the probe process exited (status {status}) without an answer") from exc

    def close(self) -> None:
        """Kill and reap a running child (at shutdown, or when it overran)."""
        if not self._pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self._pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self._pid, 0)
        self._forget()

    def _read_answer(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while size <= _ANSWER_LIMIT:
            try:
                chunk = os.read(self._fd, _ANSWER_LIMIT)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    def _forget(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._pid, self._fd = 0, -1


def _collect_in_child(write_fd: int) -> NoReturn:  # pragma: no cover - runs in the forked child
    code = 1
    try:
        os.closerange(0, write_fd)
        os.closerange(write_fd + 1, max(os.sysconf("SC_OPEN_MAX"), write_fd + 2))
        if write_fd > 2:  # finalizers that print find /dev/null, not the parent's log
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                if null != target:
                    os.dup2(null, target)
        gc.set_debug(gc.DEBUG_SAVEALL)  # keep what it finds, to name its types
        gc.unfreeze()
        collected = gc.collect()
        types = Counter(type(found).__qualname__ for found in gc.garbage).most_common(_TOP_TYPES)
        os.write(write_fd, orjson.dumps({"collected": collected, "types": types}))
        code = 0
    finally:
        os._exit(code)
