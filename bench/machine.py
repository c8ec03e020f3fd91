"""The machine a benchmark ran on, for its result file: CPU, Python, the libraries measured, RabbitMQ,
and how fast it was while the run lasted.

Apart from the run (``bench.run``) because it reads the host and the installed packages, not the servers.

The speed probe: the same boxes of this workplace have run the same code at half the speed of another
day, and a host that takes cycles from its VM in bursts makes one run's phases disagree (issue 12,
tenth pass). A fixed pure-Python loop timed a few times at the start and at the end of a run says
which kind of box a result file came from; ratios within one run remain the figures to compare.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path
from typing import Any

SPEED_LOOP = 2_000_000
"""Iterations of the probe's loop: ~0.1-0.3 s of CPU on the 2-core boxes here."""


def speed_probe(times: int = 3, loop: int = SPEED_LOOP) -> list[float]:
    """CPU milliseconds of the same pure-Python loop, ``times`` times: higher is a slower box."""
    timings: list[float] = []
    for _ in range(times):
        started = time.process_time()
        total = 0
        for index in range(loop):
            total += index
        timings.append(round(1000 * (time.process_time() - started), 1))
    return timings


def machine_facts(rabbitmq: str) -> dict[str, Any]:
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    from importlib.metadata import PackageNotFoundError, version

    try:
        uvloop_version: str | None = version("uvloop")
    except PackageNotFoundError:
        uvloop_version = None

    import aiohttp

    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uvloop": uvloop_version,
        "aiohttp": aiohttp.__version__,
        "python_socketio": version("python-socketio"),
        "rabbitmq": rabbitmq,
    }
