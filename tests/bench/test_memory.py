"""Smoke test of the memory probe: ``python -m bench.memory`` end to end, a few clients, with tracing.

Asserts only that a run gives its figures for both servers — RSS per connection, traced bytes per
connection and allocation sites — and stops by itself; never the figures themselves (on a shared
machine, and with this few clients, they are noise).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]


def test_memory_probe_gives_figures_for_the_service_and_the_floor(broker_url: str, tmp_path: Path) -> None:
    output = tmp_path / "memory.json"
    completed = subprocess.run(
        [
            sys.executable, "-m", "bench.memory", "--connections", "40", "--trace", "--top", "5",
            "--settle", "0.5", "--amqp", broker_url, "--output", str(output),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-4000:]
    assert "| service |" in completed.stdout
    assert "| raw |" in completed.stdout
    result = json.loads(output.read_text())
    assert result["connections"] == 40
    assert set(result["servers"]) == {"service", "raw"}
    for name, server in result["servers"].items():
        assert server["connections"] == 40, name
        assert math.isfinite(server["rss_kb_per_connection"]), name
        traced = server["traced"]
        # An idle WebSocket costs either server kilobytes of Python objects (aiohttp's alone ~15 KB).
        assert traced["bytes_per_connection"] > 1000, (name, traced)
        assert 0 < len(traced["sites"]) <= 5, (name, traced)
        for site in traced["sites"]:
            assert {"site", "code", "bytes", "blocks", "bytes_per_connection"} <= set(site), site
