"""The report's stream-floor comparison and broker-CPU columns, from a made-up result (no broker).

What the tables must show is decided here, away from timing noise: the service's rows get ratios to
``raw-stream`` when it ran (and only then), and a broker figure that could not be read shows as "–".
"""

from __future__ import annotations

from typing import Any

from bench.machine import speed_probe
from bench.procs import BrokerCpu, find_broker_process
from bench.report import render_markdown, summarize


def _phase(deliveries_per_s: float, cpu_s_per_1k: float, broker_cpu_pct: float | None) -> dict[str, Any]:
    return {
        "expected": 1000,
        "received": 1000,
        "deliveries_per_s": deliveries_per_s,
        "latency_ms": {"p50": 1.0, "p90": 2.0, "p99": deliveries_per_s / 1000, "max": 9.0},
        "cpu_s_per_1k": cpu_s_per_1k,
        "server_cpu_util": 0.5,
        "loadgen_cpu_util": 0.2,
        "broker_cpu_pct": broker_cpu_pct,
    }


def _server(name: str, label: str, rate: float, broker: float | None) -> dict[str, Any]:
    steady = _phase(rate, 0.04, broker)
    steps = [{"rate": 5000.0, "passed": True, "p99_ms": 2.0, "cpu_s_per_1k": 0.04, "broker_cpu_pct": broker}]
    workload = {
        "fanout": 10,
        "steady": steady,
        "burst": _phase(rate * 2, 0.02, broker),
        "find_max": {"max_rate": rate, "steps": steps},
    }
    return {
        "name": name,
        "label": label,
        "rss_before_kb": 1000.0,
        "rss_after_kb": 2000.0,
        "kb_per_connection": 10.0,
        "workloads": {"W1": workload},
    }


def _result(*servers: dict[str, Any]) -> dict[str, Any]:
    options = {
        "connections": 100,
        "groups": 10,
        "group_size": 10,
        "duration_s": 2.0,
        "rate_deliveries_per_s": 1000.0,
        "burst_deliveries": 2000,
        "prefetch": None,
    }
    machine = dict.fromkeys(
        ("cores", "cpu_model", "python", "platform", "uvloop", "aiohttp", "python_socketio", "rabbitmq"), "?"
    )
    result = {
        "command": "python -m bench",
        "date": "today",
        "runtime_s": 1.0,
        "machine": machine,
        "options": options,
        "servers": {server["name"]: server for server in servers},
    }
    result["summary"] = summarize(result)
    return result


def test_the_service_is_compared_with_the_stream_floor_when_it_ran() -> None:
    result = _result(
        _server("service", "this service (SignalR JSON)", 20_000.0, 60.0),
        _server("raw", "raw aiohttp floor", 40_000.0, 40.0),
        _server("raw-stream", "raw aiohttp floor, stream source", 25_000.0, None),
    )
    rows = {row["server"]: row for row in result["summary"]["rows"]}
    assert rows["service"]["ratio_to_raw"]["deliveries_per_s"] == 0.5
    assert rows["service"]["ratio_to_raw_stream"]["deliveries_per_s"] == 0.8
    assert rows["service"]["ratio_to_raw_stream"]["max_rate"] == 0.8
    assert rows["raw-stream"]["ratio_to_raw_stream"]["deliveries_per_s"] == 1.0
    assert "ratio_to_raw_stream" not in rows["raw"]
    markdown = render_markdown(result)
    assert "This service against the stream floor" in markdown
    assert "| W1 | this service (SignalR JSON) | 40,000 (0.80×) |" in markdown
    # The broker's CPU in the main table and in every find-max step; unreadable: "–".
    assert "| 60 \\| 60 |" in markdown
    assert "| – \\| – |" in markdown
    assert "| 0.0400 | 40 |" in markdown


def test_without_the_stream_floor_there_is_no_such_table() -> None:
    result = _result(
        _server("service", "this service (SignalR JSON)", 20_000.0, 60.0),
        _server("raw", "raw aiohttp floor", 40_000.0, 40.0),
    )
    assert all("ratio_to_raw_stream" not in row for row in result["summary"]["rows"])
    assert "stream floor" not in render_markdown(result)


def test_a_broker_that_is_not_a_local_process_has_no_cpu_figure() -> None:
    assert find_broker_process("amqp://guest:guest@192.0.2.1:5672/") is None  # TEST-NET-1: not here
    nowhere = BrokerCpu(None)
    assert nowhere.seconds() is None
    assert nowhere.percent(1.0, 5.0) is None


def test_the_machine_line_says_how_fast_the_box_was_before_and_after_the_run() -> None:
    result = _result(_server("raw", "raw aiohttp floor", 40_000.0, 40.0))
    assert "speed probe" not in render_markdown(result)  # result files from before the probe
    result["machine"]["speed_probe_ms"] = {"before": [120.4, 118.0], "after": [181.2, 240.0]}
    assert "speed probe (CPU ms of one Python loop, lower is faster) 120 / 118 before, 181 / 240 after" in (
        render_markdown(result)
    )


def test_the_speed_probe_times_the_same_loop_each_time() -> None:
    timings = speed_probe(times=2, loop=200_000)
    assert len(timings) == 2
    assert all(ms > 0 for ms in timings)
