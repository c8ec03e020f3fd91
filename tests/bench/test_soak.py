"""Smoke test of the soak: ``python -m bench.soak`` for a minute, with every kind of fault.

Asserts only what a correct run must show — the figures printed over time, each fault kind happened,
the count check held (every event owed to a client kept once, every invalid one dead-lettered), and
the private node it started is gone afterwards — never a timing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devkit.local_broker import port_open

ROOT = Path(__file__).resolve().parents[2]

# A private RabbitMQ node (rabbitmq-server installed), two services and their restarts.
pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(420)]


def test_soak_prints_its_figures_and_the_count_check_holds_across_restarts(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench.soak", "--duration", "60", "--fault-interval", "8"]
    argv += ["--report-interval", "10", "--clients", "2", "--rate", "10", "--invalid-every", "20"]
    argv += ["--output", str(tmp_path), "--label", "smoke"]
    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=400, check=False)
    out = completed.stdout
    assert completed.returncode == 0, out[-4000:] + completed.stderr[-4000:]
    assert "count check PASSED" in out

    result = json.loads((tmp_path / "soak-smoke.json").read_text())
    summary = result["summary"]
    assert summary["ok"] is True
    assert summary["missing"] == summary["duplicated"] == summary["unexpected"] == 0
    assert summary["deliveries_owed"] > 0
    assert summary["published_invalid"] > 0
    assert summary["dead_lettered_distinct"] == summary["published_invalid"]
    assert {"sigterm", "broker", "sigkill"} <= set(summary["faults"])
    for kind, stats in summary["per_transport"].items():
        assert stats["owed"] > 0, kind
        assert stats["connects"] > stats["clients"], kind  # every transport reconnected at least once

    # Figures over time: each instance measured (RSS, fds, asyncio tasks, connections) more than once.
    measured = [row for row in result["rows"] if not row.get("down")]
    for name in ("a", "b"):
        rows = [row for row in measured if row["instance"] == name]
        assert len(rows) >= 2, name
        assert all(row["rss"] > 0 and row["fds"] > 0 and row["tasks"] > 0 for row in rows), rows
    assert "RSS MB" in out
    assert "KB/conn" in out
    assert "tasks" in out

    # The private node is stopped and gone.
    match = re.search(r"private RabbitMQ node on 127\.0\.0\.1:(\d+)", out)
    assert match is not None
    assert not port_open(int(match.group(1)))
