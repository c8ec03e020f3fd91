"""Smoke test of the fan-out benchmark: ``python -m bench --quick`` end to end, the default servers;
and a small run with the stream floor (``raw-stream``).

Asserts only what a correct run must show — every delivery arrived, every client joined, the result
file has its keys — never a timing: absolute numbers on a shared machine are not a test.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.procs import find_broker_process
from tests.support.broker import existing_queues

ROOT = Path(__file__).resolve().parents[2]
# The first server port (each server gets its own): the bench's default, or BENCH_TEST_PORT when
# other runs on the machine use it.
PORT = int(os.environ.get("BENCH_TEST_PORT", "5150"))

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

_ROW_KEYS = {
    "server",
    "workload",
    "expected",
    "received",
    "lost",
    "deliveries_per_s",
    "latency_ms",
    "cpu_s_per_1k",
    "rss_before_kb",
    "rss_after_kb",
    "kb_per_connection",
    "max_rate",
    "ratio_to_raw",
    "loop_lag",
}


def test_quick_benchmark_delivers_everything(broker_url: str, tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "bench", "--quick", "--amqp", broker_url, "--output", str(tmp_path)]
    argv += ["--port", str(PORT)]
    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=360, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    assert (tmp_path / "latest.md").read_text().startswith("# Fan-out benchmark")

    assert set(result["servers"]) == {"service", "service-msgpack", "socketio", "raw"}
    assert {"command", "date", "machine", "options", "runtime_s", "summary"} <= set(result)
    assert {"cores", "cpu_model", "python"} <= set(result["machine"])
    summary = result["summary"]
    assert summary["ok"] is True
    assert summary["lost"] == 0
    assert summary["failed_connections"] == 0
    rows = summary["rows"]
    assert {(row["server"], row["workload"]) for row in rows} == {
        (server, workload)
        for server in ("service", "service-msgpack", "socketio", "raw")
        for workload in ("W1", "W2")
    }
    for row in rows:
        assert set(row) >= _ROW_KEYS, row
        assert row["lost"] == 0
        assert row["expected"] > 0
        assert row["received"] == row["expected"]
        assert {"p50", "p90", "p99", "max"} <= set(row["latency_ms"])
        # Every server samples its event loop's lag; the steady phase has its own share of samples.
        assert row["loop_lag"]["samples"] > 0, row["loop_lag"]
        assert {"p99_ms", "max_ms"} <= set(row["loop_lag"])
        assert {"deliveries_per_s", "cpu_s_per_1k", "kb_per_connection"} <= set(row["ratio_to_raw"])
    storms = {storm["server"]: storm for storm in summary["storm"]}
    assert set(storms) == set(result["servers"])
    for storm in storms.values():
        assert storm["connections"] == result["options"]["connections"]
        assert storm["failed"] == 0
    # Every process the run started is gone, and so are its broker entities (checked by name prefix).
    assert "bench." not in _listening_benchmark_ports()


def _listening_benchmark_ports() -> str:
    """Servers listening on the benchmark's ports (PORT+) after the run: there must be none."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the bench extra
        return ""
    ports = range(PORT, PORT + 10)
    found = [
        f"bench.{conn.laddr.port}"
        for conn in psutil.net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port in ports
    ]
    return " ".join(found)


def test_stream_floor_delivers_everything_counts_the_broker_and_leaves_no_queue(
    broker_url: str, tmp_path: Path
) -> None:
    """``raw-stream`` (the floor reading a durable RabbitMQ stream) next to the service and ``raw``,
    a few hundred clients, W1 only: nothing lost, the broker's CPU in every phase when the broker is a
    local process, the service's rows against the stream floor, and every queue of the run deleted."""
    argv = [sys.executable, "-m", "bench", "--servers", "service,raw,raw-stream", "--workloads", "W1"]
    argv += ["--connections", "200", "--duration", "2", "--rate", "1000", "--burst", "2000"]
    argv += ["--amqp", broker_url, "--output", str(tmp_path), "--port", str(PORT + 10), "--timeout", "240"]
    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((tmp_path / "latest.json").read_text())
    summary = result["summary"]
    assert summary["ok"] is True
    rows = {row["server"]: row for row in summary["rows"]}
    assert set(rows) == {"service", "raw", "raw-stream"}
    local_broker = find_broker_process(broker_url) is not None
    for row in rows.values():
        assert row["lost"] == 0
        assert row["received"] == row["expected"] > 0
        for key in ("broker_cpu_pct_steady", "broker_cpu_pct_burst"):
            if local_broker:  # a remote broker (or one psutil may not read) gives None, shown as "–"
                assert isinstance(row[key], float), (key, row)
                assert row[key] >= 0, (key, row)
            else:
                assert row[key] is None, (key, row)
        # The steady phase publishes for 2 s; a burst of 200 events may drain from what the broker had
        # already sent (the prefetch window) in less than psutil's 10 ms tick: 0 % is a fair figure.
        assert not local_broker or row["broker_cpu_pct_steady"] > 0, row
    assert rows["raw-stream"]["ratio_to_raw_stream"]["deliveries_per_s"] == 1.0
    assert rows["service"]["ratio_to_raw_stream"]["cpu_s_per_1k"] is not None
    assert "ratio_to_raw_stream" not in rows["raw"]  # the service's rows and the stream floor's own
    markdown = (tmp_path / "latest.md").read_text()
    assert "broker CPU % (steady \\| burst)" in markdown
    assert "This service against the stream floor" in markdown
    queues = [queue for server in result["servers"].values() for queue in server["queues"]]
    assert any(queue.endswith(".raw-stream.queue") for queue in queues), queues
    assert asyncio.run(existing_queues(broker_url, queues)) == []
