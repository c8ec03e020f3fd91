"""The soak's service instances: started, stopped with SIGTERM or SIGKILL, and read through ``/metrics``.

Apart from the run (``bench.soak``) so that the faults (``bench.soak_faults``) and the figure lines
(``bench.soak_report``) reach an instance without the orchestrator.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.procs import Child
from bench.service import SERVICE_LAUNCHER, wait_service_ready

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Instance:
    name: str
    port: int
    env: dict[str, str]
    log_dir: Path
    child: Child | None = None
    starts: int = 0
    idle_rss: float | None = None  # bytes, at its first start, before any client

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.starts += 1
        self.child = await Child.start(
            f"{self.name}-{self.starts}",
            [sys.executable, "-c", SERVICE_LAUNCHER],
            env=self.env,
            log_dir=self.log_dir,
            cwd=ROOT,
        )
        await wait_service_ready(self.child, self.port, timeout=120.0)

    async def terminate(self) -> float:
        """SIGTERM; seconds until it exited (its own shutdown bound applies)."""
        child = self.child
        if child is None:
            return 0.0
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            child.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(child.process.wait(), 30.0)
        await child.stop(1.0)
        return time.monotonic() - started

    async def kill(self) -> None:
        child = self.child
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGKILL)
            await child.stop(1.0)


async def scrape(session: aiohttp.ClientSession, instance: Instance) -> dict[str, float] | None:
    """The figures the soak prints, from one instance's ``/metrics``; None when it does not answer."""
    wanted = {
        "process_resident_memory_bytes": "rss",
        "process_open_fds": "fds",
        "realtime_asyncio_tasks": "tasks",
        "realtime_hub_connections": "connections",
    }
    try:
        async with session.get(
            f"{instance.base}/metrics", timeout=aiohttp.ClientTimeout(total=5)
        ) as response:
            text = await response.text()
    except (aiohttp.ClientError, OSError, TimeoutError):
        return None
    figures: dict[str, float] = dict.fromkeys(wanted.values(), 0.0)
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            figures[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return figures
