"""Child processes of a run: started in their own session, always stopped, measured with psutil.

Rule: every process the benchmark starts is registered here and killed (its whole process group) when
the run ends, whether it ends normally, by an exception, by Ctrl-C or by SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import orjson
import psutil

__all__ = ["Child", "LoadGenProcess", "kill_all"]

_CHILDREN: list[Child] = []


class Child:
    """One child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, log_path: Path) -> None:
        self.name = name
        self.process = process
        self.log_path = log_path
        self.ps = psutil.Process(process.pid)
        _CHILDREN.append(self)

    @classmethod
    async def start(
        cls,
        name: str,
        argv: list[str],
        *,
        env: dict[str, str] | None = None,
        log_dir: Path,
        pipes: bool = False,
        cwd: Path | None = None,
    ) -> Child:
        log_path = log_dir / f"{name}.log"
        log = log_path.open("wb")
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                env=env,
                cwd=cwd,
                stdin=asyncio.subprocess.PIPE if pipes else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE if pipes else log,
                stderr=log,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                limit=64 * 1024 * 1024,
            )
        finally:
            log.close()
        return cls(name, process, log_path)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.returncode is None

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def rss_kb(self) -> float:
        return float(self.ps.memory_info().rss) / 1024

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def pause(self) -> None:
        """SIGSTOP: the broker queues what is published meanwhile (a backlog the server then drains)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)

    async def interrupt(self, timeout: float) -> None:
        """SIGINT (py-spy then writes its profile), then stop."""
        self._signal(signal.SIGINT)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), timeout)
        await self.stop(1.0)

    async def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to the group, then SIGKILL after ``timeout``."""
        if self.alive():
            self._signal(signal.SIGCONT)
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except TimeoutError:
                self._signal(signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.process.wait(), 5.0)
        self._signal(signal.SIGKILL)  # anything left in its group
        if self in _CHILDREN:
            _CHILDREN.remove(self)

    def _signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)


class LoadGenProcess:
    """A client child (the load generator, or ``module``), driven by JSON lines over its stdin/stdout.

    The child prints ``{"ready": true}`` once, then answers each command line with one line.
    """

    def __init__(self, child: Child) -> None:
        self.child = child

    @classmethod
    async def start(
        cls,
        python: str,
        *,
        log_dir: Path,
        name: str = "loadgen",
        module: str = "bench.loadgen",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> LoadGenProcess:
        child = await Child.start(
            name, [python, "-m", module, *args], env=env, log_dir=log_dir, pipes=True, cwd=cwd
        )
        generator = cls(child)
        ready = await generator._read(30.0)
        if not ready.get("ready"):
            raise RuntimeError(f"{name} did not start: {ready}")
        return generator

    async def call(self, op: str, reply_timeout: float, **arguments: Any) -> dict[str, Any]:
        process = self.child.process
        assert process.stdin is not None
        process.stdin.write(orjson.dumps({"op": op, **arguments}) + b"\n")
        await process.stdin.drain()
        answer = await self._read(reply_timeout)
        if "error" in answer:
            raise RuntimeError(f"{self.child.name} {op}: {answer['error']}")
        return answer

    async def _read(self, timeout: float) -> dict[str, Any]:
        stdout = self.child.process.stdout
        assert stdout is not None
        line = await asyncio.wait_for(stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"{self.child.name} exited; its log ends:\n{self.child.log_tail()}")
        answer: dict[str, Any] = orjson.loads(line)
        return answer

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.call("quit", 10.0)
        await self.child.stop(5.0)


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL it if the benchmark dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_all() -> None:
    """SIGKILL every registered child's process group (last resort, synchronous)."""
    for child in _CHILDREN:
        child._signal(signal.SIGKILL)
    _CHILDREN.clear()
