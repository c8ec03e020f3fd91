"""The forked probe: a real child process runs the full pass over a copy of this test's heap."""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import time
import weakref
from collections.abc import Iterator

import pytest

from service.gc_probe import ForkedGcProbe, GcProbeFailed, GcProbeResult


class _ProbeCycle:
    """A reference cycle nobody reaches: the garbage a refreeze's pass is for."""

    def __init__(self) -> None:
        self.me = self


class _WritesOnFinalize:
    """Unreachable, but its finalizer writes to a socket the process still uses."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.me = self

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.send(b"written by a finalizer")


@pytest.fixture
def frozen_heap() -> Iterator[None]:
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()


def _answer(probe: ForkedGcProbe) -> GcProbeResult:
    """The child has no awaitable: poll its exit, as the heartbeat does once a round."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        result = probe.poll()
        if result is not None:
            return result
        time.sleep(0.01)
    probe.close()
    raise AssertionError("the probe gave no answer in 30 s")


def test_the_probe_counts_cycles_among_frozen_objects_without_freeing_them_here(frozen_heap: None) -> None:
    gc.unfreeze()
    cycles = [_ProbeCycle() for _ in range(3000)]
    alive = [weakref.ref(cycle) for cycle in cycles[:10]]
    del cycles  # unreachable now, but frozen below: only a full pass over an unfrozen heap frees them
    gc.freeze()
    frozen = gc.get_freeze_count()
    probe = ForkedGcProbe()
    assert probe.start()
    result = _answer(probe)
    assert not probe.running
    assert result.collected >= 3000
    assert ("_ProbeCycle", 3000) in result.top_types
    # This process did not run the pass (it would have freed the 3,000 cycles). Other threads (the log
    # writer) may free an object or two of theirs that the freeze took meanwhile.
    assert frozen - gc.get_freeze_count() < 100
    assert all(ref() is not None for ref in alive)


def test_the_probe_of_a_clean_heap_finds_next_to_nothing(frozen_heap: None) -> None:
    probe = ForkedGcProbe()
    assert probe.start()
    assert _answer(probe).collected < 100


def test_a_finalizer_run_by_the_probe_cannot_write_to_this_process_sockets(frozen_heap: None) -> None:
    """The child closes every descriptor but its answer pipe before collecting: a finalizer there
    fails on a closed descriptor instead of writing to (or shutting down) a shared connection."""
    ours, peer = socket.socketpair()
    with ours, peer:
        gc.unfreeze()
        _WritesOnFinalize(ours)  # unreachable at once, but only a full pass runs its finalizer
        gc.freeze()
        probe = ForkedGcProbe()
        assert probe.start()
        assert ("_WritesOnFinalize", 1) in _answer(probe).top_types
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(100)
        ours.send(b"still ours")
        peer.setblocking(True)
        assert peer.recv(100) == b"still ours"


class _HangsInTheProbe:
    """Unreachable; its finalizer never returns in a forked copy (a lock another thread held at the
    fork, say), and returns at once here."""

    def __init__(self, parent: int) -> None:
        self.parent = parent
        self.me = self

    def __del__(self) -> None:
        if os.getpid() != self.parent:
            time.sleep(3600)


def test_a_probe_that_does_not_answer_in_time_is_killed_and_reported(frozen_heap: None) -> None:
    gc.unfreeze()
    _HangsInTheProbe(os.getpid())
    gc.freeze()
    now = [0.0]
    probe = ForkedGcProbe(timeout=60.0, clock=lambda: now[0])
    assert probe.start()
    pid = probe._pid
    assert probe.poll() is None  # still collecting (stuck in the finalizer)
    now[0] = 61.0
    with pytest.raises(GcProbeFailed, match="no answer in 60 s"):
        probe.poll()
    assert not probe.running
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def test_closing_kills_and_reaps_a_running_probe(frozen_heap: None) -> None:
    probe = ForkedGcProbe()
    assert probe.start()
    pid = probe._pid
    probe.close()
    assert not probe.running
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped: no zombie left behind


def test_one_probe_at_a_time() -> None:
    probe = ForkedGcProbe()
    with pytest.raises(RuntimeError, match="no probe is running"):
        probe.poll()
