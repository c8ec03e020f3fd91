"""Smoke test of the slow-client benchmark: ``python -m bench.slow_client`` end to end, small and short.

Asserts only what a correct run must show — the silent client is dropped as ``slow_client`` at every
rate, every healthy client receives every delivery and none is dropped — never a timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]


def test_slow_client_benchmark_sees_the_silent_client_dropped_and_the_healthy_ones_served(
    tmp_path: Path,
) -> None:
    output = tmp_path / "slow_client.json"
    result = subprocess.run(
        [
            sys.executable, "-m", "bench.slow_client", "--send-buffers", "65536", "--send-timeout", "1",
            "--silent-rates", "50,5000", "--silent-max-seconds", "30", "--clients", "20",
            "--seconds", "1", "--burst-seconds", "0.5", "--output", str(output),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| 65536 |" in result.stdout
    [run] = json.loads(output.read_text())["results"]
    for silent in run["silent"]:
        assert silent["dropped"], silent
        assert silent["reason"] == "slow_client", silent
    for phase in ("steady", "burst"):
        assert run[phase]["dropped"] == 0, run[phase]
        assert run[phase]["received"] == run[phase]["deliveries"] > 0, run[phase]
