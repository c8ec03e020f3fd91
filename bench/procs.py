"""Child processes of a run: started in their own session, always stopped, measured with psutil.

Rule: every process the benchmark starts is registered here and killed (its whole process group) when
the run ends, whether it ends normally, by an exception, by Ctrl-C or by SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import signal
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import psutil

from bench.loadgen import merge_storms, merge_waits

__all__ = [
    "BrokerCpu",
    "Child",
    "LoadGenPool",
    "LoadGenProcess",
    "find_broker_process",
    "kill_all",
    "loadgen_procs_for",
    "shares",
]

CLIENTS_PER_LOADGEN = 9_500
"""Clients one load-generator process owns at most by default: the per-process open-file limit is
20,000 here, and a process needs a socket per client plus the negotiate requests in flight."""

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


def loadgen_procs_for(connections: int) -> int:
    """The default number of load-generator processes: 1 up to 9,500 clients, 2 up to 19,000, …"""
    return max(1, -(-connections // CLIENTS_PER_LOADGEN))


def shares(count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` clients as ``parts`` contiguous (first index, count) shares, the larger ones first."""
    base, extra = divmod(count, parts)
    out: list[tuple[int, int]] = []
    first = 0
    for part in range(parts):
        size = base + (1 if part < extra else 0)
        out.append((first, size))
        first += size
    return out


class LoadGenPool:
    """The load generator as one or more ``bench.loadgen`` processes, driven as if it were one.

    Each process owns a contiguous share of the client indexes (so group ``g{i % groups}`` and the
    token of client ``i`` are the same whatever the split) and a share of the storm's concurrency.
    Results are merged from raw samples (``merge_storms``, ``merge_waits``): one process or several
    give the same kind of figures.
    """

    def __init__(self, members: list[LoadGenProcess]) -> None:
        self.members = members
        self.sizes: list[dict[str, int]] = [{} for _ in members]

    @classmethod
    async def start(cls, python: str, *, log_dir: Path, procs: int, name: str = "loadgen") -> LoadGenPool:
        members: list[LoadGenProcess] = []
        try:
            for part in range(procs):
                label = name if procs == 1 else f"{name}-{part}"
                members.append(await LoadGenProcess.start(python, log_dir=log_dir, name=label))
        except BaseException:
            for member in members:
                await member.stop()
            raise
        return cls(members)

    def cpu_seconds(self) -> float:
        """CPU of all the processes together (may exceed the wall time: they run side by side)."""
        return sum(member.child.cpu_seconds() for member in self.members)

    async def connect(self, spec: dict[str, Any], reply_timeout: float) -> dict[str, Any]:
        """The storm: every process connects its share at once; one merged result."""
        concurrency = max(1, -(-int(spec.get("concurrency", 100)) // len(self.members)))
        calls = [
            member.call(
                "connect", reply_timeout, **{**spec, "first": first, "n": n, "concurrency": concurrency}
            )
            for member, (first, n) in zip(
                self.members, shares(int(spec["n"]), len(self.members)), strict=True
            )
        ]
        parts = await asyncio.gather(*calls)
        self.sizes = [dict(part["group_sizes"]) for part in parts]
        return merge_storms(parts)

    async def wait(
        self, phase: int, by_region: dict[str, int], timeout: float, idle: float, reply_timeout: float
    ) -> dict[str, Any]:
        """Every process waits for its own expected share of ``phase`` (events ``by_region`` times its
        members of each region); one merged result."""
        calls = []
        for member, sizes in zip(self.members, self.sizes, strict=True):
            expected = sum(count * sizes.get(region, 0) for region, count in by_region.items())
            calls.append(
                member.call(
                    "wait",
                    reply_timeout,
                    phase=phase,
                    expected=expected,
                    timeout=timeout,
                    idle=idle,
                    samples=True,
                )
            )
        return merge_waits(list(await asyncio.gather(*calls)))

    async def forget(self, phase: int) -> None:
        await asyncio.gather(*(member.call("forget", 10.0, phase=phase) for member in self.members))

    async def stop(self) -> None:
        await asyncio.gather(*(member.stop() for member in self.members))


class BrokerCpu:
    """The local RabbitMQ node's CPU, read like a server's: on two cores the broker takes its share
    of every phase (a stream about twice a classic queue's), which the server's own CPU does not show.

    ``process`` None (the broker is remote or not found, or psutil may not read it): every figure None.
    """

    def __init__(self, process: psutil.Process | None) -> None:
        self.process = process

    @classmethod
    def find(cls, amqp_url: str) -> BrokerCpu:
        return cls(find_broker_process(amqp_url))

    def seconds(self) -> float | None:
        if self.process is None:
            return None
        try:
            times = self.process.cpu_times()
        except psutil.Error:
            return None
        return float(times.user + times.system)

    def percent(self, since: float | None, wall: float) -> float | None:
        """% of one core since ``since`` (a ``seconds()``) over ``wall`` seconds; None without both."""
        now = self.seconds()
        if since is None or now is None or wall <= 0:
            return None
        return round(100.0 * (now - since) / wall, 1)


def find_broker_process(amqp_url: str) -> psutil.Process | None:
    """The ``beam.smp`` of the RabbitMQ node behind ``amqp_url`` when it runs on this machine: the node
    (``-s rabbit``) listening on the URL's port, or the only node there is if its sockets are unreadable."""
    parts = urlsplit(amqp_url)
    if not _is_local(parts.hostname or "localhost"):
        return None
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    nodes: list[psutil.Process] = []
    for process in psutil.process_iter(["name", "cmdline"]):
        cmdline = process.info["cmdline"] or []
        if process.info["name"] == "beam.smp" and "rabbit" in cmdline:
            nodes.append(process)
    unreadable = 0
    for node in nodes:
        try:
            listening = node.net_connections(kind="tcp")
        except psutil.Error:
            unreadable += 1
            continue
        if any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port for c in listening):
            return node
    return nodes[0] if len(nodes) == 1 and unreadable else None


def _is_local(host: str) -> bool:
    try:
        address = ipaddress.ip_address(socket.gethostbyname(host))
    except (OSError, ValueError):
        return False
    if address.is_loopback:
        return True
    local = {a.address for addrs in psutil.net_if_addrs().values() for a in addrs}
    return str(address) in local


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
