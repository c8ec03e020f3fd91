"""The load generator as several processes (``--loadgen-procs``): shares, merging, and a run end to end.

The end-to-end test runs ``python -m bench`` with two load-generator processes of a few hundred
clients each against the service and the raw floor, and asserts only what a correct run must show —
every client joined, each process owned its share, the merged deliveries equal the expected ones —
never a timing. Like the other bench tests it needs RabbitMQ and fails (never skips) without it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bench.loadgen import merge_storms, merge_waits, percentiles
from bench.procs import loadgen_procs_for, shares

ROOT = Path(__file__).resolve().parents[2]


def test_shares_cover_every_client_once_in_contiguous_ranges() -> None:
    assert shares(1001, 2) == [(0, 501), (501, 500)]
    assert shares(19_000, 2) == [(0, 9_500), (9_500, 9_500)]
    assert shares(5, 1) == [(0, 5)]
    for count, parts in ((7, 3), (600, 2), (19_000, 3)):
        ranges = shares(count, parts)
        indexes = [i for first, n in ranges for i in range(first, first + n)]
        assert indexes == list(range(count))


def test_one_process_per_9500_clients_by_default() -> None:
    assert [loadgen_procs_for(n) for n in (1, 1000, 9_500, 9_501, 10_000, 19_000, 19_001)] == [
        1,
        1,
        1,
        2,
        2,
        2,
        3,
    ]


def test_merged_waits_pool_the_samples_of_every_process() -> None:
    a = {
        "received": 3,
        "latency_us": [1000, 2000, 3000],
        "first_us": 10,
        "last_us": 50,
        "lost_connections": 0,
    }
    b = {"received": 2, "latency_us": [4000, 5000], "first_us": 5, "last_us": 40, "lost_connections": 1}
    empty = {"received": 0, "latency_us": [], "first_us": None, "last_us": None, "lost_connections": 0}
    merged = merge_waits([a, b, empty])
    assert merged["received"] == 5
    assert merged["received_by_process"] == [3, 2, 0]
    assert (merged["first_us"], merged["last_us"]) == (5, 50)
    assert merged["lost_connections"] == 1
    # The percentiles of all five samples, not a mix of each process's percentiles.
    assert merged["latency_ms"] == percentiles([1000, 2000, 3000, 4000, 5000])
    assert merged["latency_ms"] == {"p50": 3.0, "p90": 5.0, "p99": 5.0, "max": 5.0}


def test_merged_storms_add_counts_and_group_sizes() -> None:
    a = {
        "connected": 2,
        "failed": 1,
        "retries": 1,
        "errors": {"OSError: x": 1},
        "seconds": 1.5,
        "connect_us": [1000, 3000],
        "group_sizes": {"g0": 1, "g1": 1, "all": 2},
    }
    b = {
        "connected": 2,
        "failed": 0,
        "retries": 0,
        "errors": {},
        "seconds": 2.5,
        "connect_us": [2000, 4000],
        "group_sizes": {"g0": 1, "g1": 1, "all": 2},
    }
    merged = merge_storms([a, b])
    assert (merged["connected"], merged["failed"], merged["retries"]) == (4, 1, 1)
    assert merged["errors"] == {"OSError: x": 1}
    assert merged["seconds"] == 2.5  # as long as the slowest share
    assert merged["group_sizes"] == {"g0": 2, "g1": 2, "all": 4}
    assert merged["connect_ms"] == percentiles([1000, 2000, 3000, 4000])
    assert [p["connected"] for p in merged["processes"]] == [2, 2]


def _ports(count: int) -> int:
    """First of ``count`` consecutive free ports: ``BENCH_TEST_PORT`` if set, else found by probing."""
    if "BENCH_TEST_PORT" in os.environ:
        return int(os.environ["BENCH_TEST_PORT"])
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first: int = probe.getsockname()[1]
        try:
            for port in range(first, first + count):
                with socket.socket() as other:
                    other.bind(("127.0.0.1", port))
        except OSError:
            continue
        return first
    raise RuntimeError("no block of free ports")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_load_generator_processes_deliver_every_event_once(broker_url: str, tmp_path: Path) -> None:
    clients = 600
    argv = [sys.executable, "-m", "bench", "--servers", "service,raw", "--connections", str(clients)]
    argv += ["--loadgen-procs", "2", "--duration", "2", "--rate", "1200", "--burst", "6000"]
    argv += ["--amqp", broker_url, "--port", str(_ports(2)), "--output", str(tmp_path)]
    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((tmp_path / "latest.json").read_text())

    assert result["options"]["loadgen_procs"] == 2
    assert result["summary"]["ok"] is True
    for name, server in result["servers"].items():
        assert server["loadgen_procs"] == 2, name
        assert server["server_fd_limit"] >= clients, name
        storm = server["storm"]
        assert storm["connected"] == clients, storm
        assert storm["failed"] == 0, storm
        assert [share["connected"] for share in storm["processes"]] == [clients // 2, clients // 2]
        for workload in ("W1", "W2"):
            for phase in ("steady", "burst"):
                stats = server["workloads"][workload][phase]
                assert stats["expected"] > 0
                assert stats["received"] == stats["expected"], (name, workload, phase, stats)
                by_process = stats["received_by_process"]
                # Both processes received their half: W1's groups and W2's broadcast span both shares.
                assert len(by_process) == 2, by_process
                assert sum(by_process) == stats["received"], by_process
                assert by_process[0] == by_process[1], by_process
                assert {"p50", "p90", "p99", "max"} <= set(stats["latency_ms"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_scaling_table_has_a_row_per_step_and_server_with_ratios_to_the_floor(
    broker_url: str, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "bench", "--scaling", "200,400", "--servers", "service,raw"]
    argv += ["--loadgen-procs", "2", "--duration", "1", "--rate", "1000", "--w2-rate", "2000"]
    argv += ["--amqp", broker_url, "--port", str(_ports(2)), "--output", str(tmp_path)]
    completed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = json.loads((tmp_path / "scaling.json").read_text())
    assert (tmp_path / "scaling.md").read_text().startswith("# Fan-out benchmark — scaling")

    assert result["ok"] is True
    assert result["complete"] is True
    assert result["options"]["loadgen_procs"] == 2
    assert [(row["step"], row["server"]) for row in result["table"]] == [
        (200, "service"),
        (200, "raw"),
        (400, "service"),
        (400, "raw"),
    ]
    for row in result["table"]:
        assert row["connections"] == row["step"], row
        assert row["expected"] > 0, row
        assert row["received"] == row["expected"], row
        for key in ("kb_per_connection", "w1_cpu_s_per_1k", "w2_cpu_s_per_1k", "w1_p99_ms", "w2_p99_ms"):
            assert row[key] is not None, (key, row)
        assert row["ratio_to_raw"]["w1_cpu_s_per_1k"] is not None, row
        if row["server"] == "raw":
            assert row["ratio_to_raw"]["w1_cpu_s_per_1k"] == 1.0
    for step in result["steps"]:
        for server in step["servers"].values():
            assert server["workloads"]["W1"]["burst"] is None  # --scaling: no bursts by default
