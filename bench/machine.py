"""The machine a benchmark ran on, for its result file: CPU, Python, the libraries measured, RabbitMQ.

Apart from the run (``bench.run``) because it reads the host and the installed packages, not the servers.
"""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any


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
