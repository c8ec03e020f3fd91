"""``bench.gc_pause`` reads what each GC_FREEZE action cost from the service's own metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from bench.gc_pause import FULL_GC, parse_args, parse_gc_metrics, render


def test_the_pause_per_action_is_read_from_the_service_metrics_format() -> None:
    registry = CollectorRegistry()
    freezes = Counter("realtime_gc_freezes", "", ["action"], registry=registry)
    pauses = Histogram("realtime_gc_pause_seconds", "", ["action"], registry=registry)
    freezes.labels("fork").inc()
    pauses.labels("fork").observe(0.0097)
    freezes.labels("refreeze").inc(2)
    pauses.labels("refreeze").observe(0.34)
    pauses.labels("refreeze").observe(0.46)
    passes = Histogram("realtime_gc_collection_seconds", "", ["generation"], registry=registry)
    passes.labels("2").observe(0.25)
    passes.labels("0").observe(0.001)
    parsed = parse_gc_metrics(generate_latest(registry).decode())
    assert parsed[FULL_GC] == {"count": 1.0, "pause_sum": 0.25}
    assert parsed["fork"] == {"count": 1.0, "pause_sum": 0.0097, "pause_count": 1.0}
    assert parsed["refreeze"]["count"] == 2.0
    assert round(parsed["refreeze"]["pause_sum"], 3) == 0.8


def test_the_default_churn_makes_a_refreeze_due_and_the_table_names_each_mode() -> None:
    assert parse_args(["--connections", "10000"]).churn == 2600  # a quarter of the frozen + 100
    assert parse_args(["--connections", "2000"]).churn == 1100  # at least 1,000 closes
    action = {"count": 0, "pause_ms": 0.0}
    row = {
        "mode": "probe",
        "connections": 10000,
        "churn": 2600,
        "rss_mb": 228.0,
        "latency_ms": {"p50": 0.7, "p99": 3.1, "max": 12.0},
        "lost": 0,
        "loop_lag": {"p99_ms": 1.5, "max_ms": 20.0},
        "actions": {
            "freeze": action,
            "refreeze": action,
            "fork": {"count": 1, "pause_ms": 9.7},
            "probe": {"count": 1, "pause_ms": 0.1},
            "survivors": {"count": 1, "pause_ms": 0.4},
            FULL_GC: {"count": 2, "pause_ms": 61.0},
        },
        "probe_processes": {"count": 1, "max_uss_mb": 120.5},
    }
    expected = (
        "| probe | 10,000 (2,600) | 228 | 0.7 / 3.1 / 12.0 | 0 | 1.5 / ≤20.0 | 0, 0.0 | 1, 9.7 | 1 | 120.5 "
        "| 2, 61.0 | 1 |"
    )
    assert expected in render([row])
