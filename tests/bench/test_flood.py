"""Smoke test of the flood benchmark: ``python -m bench.flood`` end to end, small and short.

Asserts only what a correct run must show — the bystander measured every window, the flooder was
stopped by the invocation limit and the service counted it, the storm came back — never a timing.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(200)]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_flood_benchmark_measures_every_window_and_the_limit_stops_the_flooder(
    broker_url: str, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "bench.flood", "--amqp", broker_url, "--output", str(tmp_path)]
    argv += ["--port", str(_free_port()), "--label", "smoke", "--invocations", "1000", "--rounds", "1"]
    argv += ["--idle", "1", "--window", "0.5", "--storm-seconds", "2", "--rate", "100", "--in-flight", "200"]
    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=180, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((tmp_path / "flood-smoke.json").read_text())

    rows = {row["scenario"]: row for row in result["rows"]}
    assert list(rows) == ["idle", "unknown", "valid", "storm"]
    for row in rows.values():
        assert row["event_ms"]["n"] > 0, row  # the bystander received events in every window
        assert row["healthz_ms"]["n"] > 0, row
        assert {"p50", "p99", "max"} <= set(row["event_ms"])
    assert result["bystander_errors"] == []
    # 200 calls at once pass the default burst of 100: the service closes the flooder's connection...
    assert rows["unknown"]["flood"]["connections"] == rows["valid"]["flood"]["connections"] == 1
    assert rows["unknown"]["flood"]["completions"] <= 100
    # ... and the storm abuser, closed, comes back.
    assert rows["storm"]["flood"]["connections"] > 1
    limited = next(line for line in result["metrics"] if 'limit="invocations"' in line)
    assert float(limited.rsplit(" ", 1)[1]) >= 2 + rows["storm"]["flood"]["connections"] - 1
    assert "# Flood benchmark" in completed.stdout
