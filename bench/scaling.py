"""The scaling table: cost per delivery from a few to ~19,000 WebSocket connections in one server process.

``python -m bench --scaling 1000,5000,10000,19000 --servers service,raw`` runs, for each step (number
of connections) and each server, what ``python -m bench`` runs for one server — a fresh server
process, W3 (the storm), W1 and W2 steady (``--rate`` / ``--w2-rate`` deliveries/s, the same at every
step), no bursts unless ``--burst`` — and this module turns the steps into one table: RSS per
connection, server CPU seconds per 1,000 deliveries (W1, W2), client latency p50/p99, the server's
loop-lag p99, delivered/expected; each figure also as a ratio to the raw floor measured in the same
step. Every step uses the same number of load-generator processes (the largest step's default, or
``--loadgen-procs``), so that only the number of connections changes from row to row.

Results: ``scaling.json`` (every step's full result, as ``latest.json`` has it, plus the table) and
``scaling.md`` in ``--output``.
"""

from __future__ import annotations

from typing import Any

from bench.report import fmt, machine_line

__all__ = ["render_scaling_markdown", "scaling_table"]

_FLOOR = "raw"


def _ratio(value: Any, floor: Any) -> float | None:
    if not isinstance(value, int | float) or not isinstance(floor, int | float) or not floor:
        return None
    return round(value / floor, 2)


def _steady(server: dict[str, Any], workload: str) -> dict[str, Any]:
    data = (server.get("workloads") or {}).get(workload) or {}
    steady: dict[str, Any] = data.get("steady") or {}
    return steady


def _figures(server: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers for one server at one step."""
    w1, w2 = _steady(server, "W1"), _steady(server, "W2")
    storm = server.get("storm") or {}
    expected = sum(phase.get("expected", 0) for phase in (w1, w2))
    received = sum(min(phase.get("received", 0), phase.get("expected", 0)) for phase in (w1, w2))
    return {
        "connections": storm.get("connected"),
        "failed_connections": storm.get("failed"),
        "joins_per_s": round(storm["connects_per_s"]) if "connects_per_s" in storm else None,
        "kb_per_connection": round(server["kb_per_connection"], 2) if "kb_per_connection" in server else None,
        "w1_cpu_s_per_1k": w1.get("cpu_s_per_1k"),
        "w2_cpu_s_per_1k": w2.get("cpu_s_per_1k"),
        "w1_p50_ms": (w1.get("latency_ms") or {}).get("p50"),
        "w1_p99_ms": (w1.get("latency_ms") or {}).get("p99"),
        "w2_p50_ms": (w2.get("latency_ms") or {}).get("p50"),
        "w2_p99_ms": (w2.get("latency_ms") or {}).get("p99"),
        "w1_loop_lag_p99_ms": (w1.get("loop_lag") or {}).get("p99_ms"),
        "w2_loop_lag_p99_ms": (w2.get("loop_lag") or {}).get("p99_ms"),
        "w1_server_cpu_util": round(w1["server_cpu_util"], 2) if "server_cpu_util" in w1 else None,
        "w2_server_cpu_util": round(w2["server_cpu_util"], 2) if "server_cpu_util" in w2 else None,
        "w1_loadgen_cpu_util": round(w1["loadgen_cpu_util"], 2) if "loadgen_cpu_util" in w1 else None,
        "w2_loadgen_cpu_util": round(w2["loadgen_cpu_util"], 2) if "loadgen_cpu_util" in w2 else None,
        "expected": expected,
        "received": received,
        "lost": expected - received,
    }


_RATIO_KEYS = (
    "kb_per_connection",
    "w1_cpu_s_per_1k",
    "w2_cpu_s_per_1k",
    "w1_p50_ms",
    "w1_p99_ms",
    "w2_p50_ms",
    "w2_p99_ms",
    "w1_loop_lag_p99_ms",
    "w2_loop_lag_p99_ms",
    "joins_per_s",
)


def scaling_table(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (step, server), in run order, each with its ratios to the same step's raw floor.

    ``steps``: ``{"connections": n, "servers": {...}}`` as ``Run.run`` returns the servers.
    """
    rows: list[dict[str, Any]] = []
    for step in steps:
        servers: dict[str, Any] = step["servers"]
        floor = servers.get(_FLOOR)
        floor_figures = _figures(floor) if floor is not None else None
        for name, server in servers.items():
            row = {"step": step["connections"], "server": name, "label": server["label"], **_figures(server)}
            row["ratio_to_raw"] = (
                {key: _ratio(row[key], floor_figures[key]) for key in _RATIO_KEYS}
                if floor_figures is not None
                else {}
            )
            rows.append(row)
    return rows


def _with_ratio(row: dict[str, Any], key: str, digits: int) -> str:
    ratio = row["ratio_to_raw"].get(key)
    text = fmt(row[key], digits)
    return text if ratio is None or row["server"] == _FLOOR else f"{text} ({ratio:.2f}×)"


def _pair(row: dict[str, Any], first: str, second: str, digits: int) -> str:
    return f"{_with_ratio(row, first, digits)} / {_with_ratio(row, second, digits)}"


def _load(options: dict[str, Any]) -> str:
    burst = options["burst_deliveries"]
    return (
        f"W3 storm of every client (each in one W1 group of {options['group_size']} and in the W2 "
        f"broadcast group); W1 steady {options['rate_deliveries_per_s']:,.0f} deliveries/s, W2 steady "
        f"{options['w2_rate_deliveries_per_s']:,.0f} deliveries/s, {options['duration_s']:.0f} s each; "
        + (f"bursts of {burst:,} deliveries" if burst else "no bursts")
        + f"; {options['loadgen_procs']} load-generator process(es) at every step; "
        f"prefetch {options['prefetch']}"
    )


def render_scaling_markdown(result: dict[str, Any]) -> str:
    options = result["options"]
    rows = result["table"]
    status = "OK — no delivery lost, every client joined" if result["ok"] else "FAILED — see the rows"
    if not result.get("complete", True):
        status += " (incomplete: the run stopped before its last step)"
    lines = [
        "# Fan-out benchmark — scaling",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}; runtime {result['runtime_s']} s",
        f"- machine: {machine_line(result['machine'])}",
        f"- load per step: {_load(options)}",
        f"- result: {status}",
        "",
        "One fresh server process per row. Ratios in parentheses are to the raw aiohttp floor measured in "
        "the same step. *RSS KB/conn*: the server's RSS growth over the storm ÷ clients joined. *CPU s/1k*: "
        "seconds of server CPU per 1,000 deliveries in the steady phase (from the first publish to the "
        "last delivery; the per-connection idle work — heartbeat, timers — is part of it). Latency: "
        "publish → client, steady phase. *loop lag*: the server's event-loop lag p99 in the steady phase "
        "(`realtime_event_loop_lag_seconds`).",
        "",
        "| connections | server | RSS KB/conn | W1 CPU s/1k | W2 CPU s/1k | W1 p50 / p99 ms "
        "| W2 p50 / p99 ms | loop lag p99 ms W1 / W2 | delivered / expected | joins/s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        joined = fmt(row["connections"])
        if row["failed_connections"]:
            joined += f" ({row['failed_connections']:,} failed)"
        cells = [
            joined,
            row["label"],
            _with_ratio(row, "kb_per_connection", 1),
            _with_ratio(row, "w1_cpu_s_per_1k", 4),
            _with_ratio(row, "w2_cpu_s_per_1k", 4),
            _pair(row, "w1_p50_ms", "w1_p99_ms", 1),
            _pair(row, "w2_p50_ms", "w2_p99_ms", 1),
            _pair(row, "w1_loop_lag_p99_ms", "w2_loop_lag_p99_ms", 1),
            f"{row['received']:,} / {row['expected']:,}",
            _with_ratio(row, "joins_per_s", 0),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
