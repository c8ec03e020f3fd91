"""Turn a run's raw measurements into rows, ratios to the raw floor, target checks and a markdown table.

Rule: ratios are computed only within one run (absolute numbers on a shared 2-core machine are noisy);
a figure is "×raw" = this server's value / the raw floor's value for the same workload. When the run
has ``raw-stream`` too (the floor reading a RabbitMQ stream, as the service does), the service's rows
also carry ratios to it (``ratio_to_raw_stream``, a table of their own): the part of the gap to
``raw`` that is the source's, not the server's.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_line", "machine_line", "render_markdown", "summarize"]

_FLOOR = "raw"
_STREAM_FLOOR = "raw-stream"


def _row(server: dict[str, Any], workload: str) -> dict[str, Any] | None:
    data = server.get("workloads", {}).get(workload)
    if data is None:
        return None
    steady = data["steady"]
    burst = data.get("burst") or {}  # None with --burst 0
    find_max = data.get("find_max") or {}
    half = find_max.get("half_max") or {}
    expected = steady["expected"] + burst.get("expected", 0)
    received = min(steady["received"], steady["expected"]) + min(
        burst.get("received", 0), burst.get("expected", 0)
    )
    return {
        "server": server["name"],
        "label": server["label"],
        "workload": workload,
        "fanout": data["fanout"],
        "expected": expected,
        "received": received,
        "lost": expected - received,
        "deliveries_per_s": _rounded(burst.get("deliveries_per_s")),
        "steady_deliveries_per_s": round(steady["deliveries_per_s"]),
        "latency_ms": steady["latency_ms"],
        "burst_latency_ms": burst.get("latency_ms"),
        "cpu_s_per_1k": steady["cpu_s_per_1k"],
        "cpu_s_per_1k_burst": burst.get("cpu_s_per_1k"),
        "server_cpu_util_steady": round(steady["server_cpu_util"], 2),
        "loadgen_cpu_util_steady": round(steady["loadgen_cpu_util"], 2),
        "server_cpu_util_burst": _rounded(burst.get("server_cpu_util"), 2),
        "loadgen_cpu_util_burst": _rounded(burst.get("loadgen_cpu_util"), 2),
        "broker_cpu_pct_steady": steady.get("broker_cpu_pct"),
        "broker_cpu_pct_burst": burst.get("broker_cpu_pct"),
        "rss_before_kb": round(server["rss_before_kb"]),
        "rss_after_kb": round(server["rss_after_kb"]),
        "kb_per_connection": round(server["kb_per_connection"], 2),
        "loop_lag": steady.get("loop_lag"),
        "max_rate": find_max.get("max_rate"),
        "p99_at_half_max_ms": (half.get("latency_ms") or {}).get("p99"),
        "find_max_steps": find_max.get("steps") or [],
    }


def _rounded(value: float | None, digits: int | None = None) -> float | None:
    return None if value is None else round(value, digits)


def _ratio(value: Any, floor: Any) -> float | None:
    if not isinstance(value, int | float) or not isinstance(floor, int | float) or not floor:
        return None
    return round(value / floor, 2)


_RATIO_KEYS = ("deliveries_per_s", "cpu_s_per_1k", "cpu_s_per_1k_burst", "kb_per_connection", "max_rate")


def _ratios(row: dict[str, Any], floor_row: dict[str, Any] | None, keys: tuple[str, ...]) -> dict[str, Any]:
    """``row``'s figures over ``floor_row``'s (``p99``: the steady latency's); empty without a floor."""
    if floor_row is None:
        return {}
    ratios = {key: _ratio(row[key], floor_row[key]) for key in keys}
    ratios["p99"] = _ratio((row["latency_ms"] or {}).get("p99"), (floor_row["latency_ms"] or {}).get("p99"))
    return ratios


def _floor_row(servers: dict[str, Any], name: str, workload: str) -> dict[str, Any] | None:
    floor = servers.get(name)
    return _row(floor, workload) if floor else None


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    servers: dict[str, Any] = result["servers"]
    rows: list[dict[str, Any]] = []
    for workload in ("W1", "W2"):
        floor_row = _floor_row(servers, _FLOOR, workload)
        stream_row = _floor_row(servers, _STREAM_FLOOR, workload)
        for server in servers.values():
            row = _row(server, workload)
            if row is None:
                continue
            row["ratio_to_raw"] = _ratios(row, floor_row, _RATIO_KEYS)
            if stream_row is not None and row["server"].startswith(("service", _STREAM_FLOOR)):
                keys = (*_RATIO_KEYS, "broker_cpu_pct_steady")
                row["ratio_to_raw_stream"] = _ratios(row, stream_row, keys)
            rows.append(row)
    storms: list[dict[str, Any]] = []
    floor_storm = (servers.get(_FLOOR) or {}).get("storm")
    for server in servers.values():
        storm = server.get("storm")
        if storm is None:
            continue
        storms.append(
            {
                "server": server["name"],
                "label": server["label"],
                "connections": storm["connected"],
                "failed": storm["failed"],
                "seconds": round(storm["seconds"], 2),
                "connects_per_s": round(storm["connects_per_s"]),
                "connect_ms": storm["connect_ms"],
                "server_cpu_s": round(storm["server_cpu_s"], 2),
                "ratio_to_raw": {
                    "connects_per_s": _ratio(
                        storm["connects_per_s"], (floor_storm or {}).get("connects_per_s")
                    )
                },
            }
        )
    lost = sum(row["lost"] for row in rows)
    failed = sum(storm["failed"] for storm in storms)
    return {
        "ok": lost == 0 and failed == 0,
        "lost": lost,
        "failed_connections": failed,
        "rows": rows,
        "storm": storms,
        "targets": _targets(rows),
    }


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The benchmark's targets (README, "Benchmark") for this service's JSON row, where the run has them."""
    by = {(row["server"], row["workload"]): row for row in rows}
    checks: list[dict[str, Any]] = []

    def check(name: str, value: Any, limit: float, *, at_most: bool) -> None:
        met = None if value is None else (value <= limit if at_most else value >= limit)
        checks.append({"target": name, "value": value, "limit": limit, "met": met})

    for workload in ("W1", "W2"):
        ours, floor, sio = (
            by.get(("service", workload)),
            by.get(("raw", workload)),
            by.get(("socketio", workload)),
        )
        if ours is None:
            continue
        if floor is not None:
            check(
                f"{workload} deliveries/s ≥ 0.8× raw",
                ours["ratio_to_raw"].get("deliveries_per_s"),
                0.8,
                at_most=False,
            )
            check(
                f"{workload} CPU/1k deliveries ≤ 1.25× raw",
                ours["ratio_to_raw"].get("cpu_s_per_1k"),
                1.25,
                at_most=True,
            )
        if sio is not None and sio["deliveries_per_s"]:
            check(
                f"{workload} deliveries/s ≥ 3× python-socketio",
                round(ours["deliveries_per_s"] / sio["deliveries_per_s"], 2),
                3.0,
                at_most=False,
            )
        if ours.get("p99_at_half_max_ms") is not None:
            check(f"{workload} p99 at half max rate < 50 ms", ours["p99_at_half_max_ms"], 50.0, at_most=True)
    ours_any = by.get(("service", "W1")) or by.get(("service", "W2"))
    if ours_any is not None:
        check("RSS per idle WebSocket ≤ 16 KB", ours_any["kb_per_connection"], 16.0, at_most=True)
    return checks


def fmt(value: Any, digits: int = 0) -> str:
    """A figure for a Markdown table: thousands separated, ``–`` for none."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _x(ratio: Any) -> str:
    return "" if ratio is None else f" ({ratio:.2f}×)"


def _latencies(latency: dict[str, Any] | None) -> str:
    latency = latency or {}
    return " / ".join(fmt(latency.get(key), 1) for key in ("p50", "p90", "p99", "max"))


def _lag(lag: dict[str, Any] | None) -> str:
    """Loop lag p99 / max (ms); max is the upper bound of the highest histogram bucket reached."""
    if not lag:
        return "–"
    return f"{fmt(lag.get('p99_ms'), 1)} / ≤{fmt(lag.get('max_ms'), 0)}"


def machine_line(machine: dict[str, Any]) -> str:
    line = (
        f"{machine['cores']} cores, {machine['cpu_model']}; Python {machine['python']}; "
        f"{machine['platform']}; uvloop {machine['uvloop']}; aiohttp {machine['aiohttp']}; "
        f"python-socketio {machine['python_socketio']}; RabbitMQ {machine['rabbitmq']}"
    )
    speed = machine.get("speed_probe_ms")
    if speed:
        before, after = (_timings(speed.get(when)) for when in ("before", "after"))
        line += f"; speed probe (CPU ms of one Python loop, lower is faster) {before} before, {after} after"
    return line


def _timings(values: list[float] | None) -> str:
    return " / ".join(fmt(value, 0) for value in values or []) or "–"


def load_line(options: dict[str, Any]) -> str:
    rate = options["rate_deliveries_per_s"]
    w2_rate = options.get("w2_rate_deliveries_per_s", rate)
    steady = f"{rate:,.0f} deliveries/s" + ("" if w2_rate == rate else f" (W2: {w2_rate:,.0f})")
    burst = options["burst_deliveries"]
    procs = options.get("loadgen_procs", 1)
    return (
        f"{options['connections']:,} WebSocket clients, each in one of {options['groups']:,} W1 groups of "
        f"{options['group_size']} and in the W2 broadcast group; steady {steady} for "
        f"{options['duration_s']:.0f} s; "
        + (f"bursts of {burst:,} deliveries" if burst else "no bursts")
        + f"; prefetch {options['prefetch']}; {procs} load-generator process{'es' if procs > 1 else ''}"
    )


def _stream_floor_table(rows: list[dict[str, Any]]) -> list[str]:
    """The service's rows against the floor that reads a stream too (``raw-stream``), when it ran: the
    part of the gap to ``raw`` that is the source's (the broker's share of two cores), not the server's."""
    compared = [row for row in rows if "ratio_to_raw_stream" in row]
    if not any(row["server"].startswith("service") for row in compared):
        return []
    lines = [
        "",
        "This service against the stream floor (`raw-stream`: the raw server reading a RabbitMQ stream "
        "as the service does, at the service's prefetch of 1,000 unless `--prefetch`); ratios in parentheses "
        "to it:",
        "",
        "| workload | server | deliveries/s | CPU s / 1k (steady \\| burst) | max rate /s | p99 ms (steady) "
        "| broker CPU % (steady) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in compared:
        ratios = row["ratio_to_raw_stream"]
        cells = [
            row["workload"],
            row["label"],
            f"{fmt(row['deliveries_per_s'])}{_x(ratios.get('deliveries_per_s'))}",
            f"{fmt(row['cpu_s_per_1k'], 4)}{_x(ratios.get('cpu_s_per_1k'))} \\| "
            f"{fmt(row['cpu_s_per_1k_burst'], 4)}{_x(ratios.get('cpu_s_per_1k_burst'))}",
            f"{fmt(row['max_rate'])}{_x(ratios.get('max_rate'))}",
            f"{fmt((row['latency_ms'] or {}).get('p99'), 1)}{_x(ratios.get('p99'))}",
            f"{fmt(row['broker_cpu_pct_steady'], 0)}{_x(ratios.get('broker_cpu_pct_steady'))}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    summary = result["summary"]
    options = result["options"]
    status = "OK — no delivery lost" if summary["ok"] else "FAILED — deliveries lost or clients not connected"
    lines = [
        "# Fan-out benchmark",
        "",
        f"- command: `{result['command']}`",
        f"- date: {result['date']}; runtime {result['runtime_s']} s",
        f"- machine: {machine_line(result['machine'])}",
        f"- load: {load_line(options)}",
        f"- result: {status}",
        "",
        "Ratios in parentheses are to the raw aiohttp floor of the same run. *deliveries/s*: the saturation "
        "burst (a backlog published while the server was paused, then drained). Latency: the steady phase. "
        "CPU: seconds of the server process per 1,000 deliveries, steady phase | burst. *max rate*: "
        "deliveries/s of the highest `--find-max` step with nothing lost and p99 < 100 ms. *loop lag*: "
        "the server's event-loop lag in the steady phase (`realtime_event_loop_lag_seconds`, sampled every "
        "50 ms), p99 / the upper bound of the highest bucket reached. *broker CPU*: the local RabbitMQ "
        "node's CPU over the same phases, % of one core (– when the broker is not a local process).",
        "",
        "| workload | server | delivered / expected | deliveries/s | p50 / p90 / p99 / max ms | "
        "loop lag p99 / max ms | CPU s / 1k (steady \\| burst) | broker CPU % (steady \\| burst) "
        "| RSS KB/conn | max rate /s | p99 @ ½ max |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["rows"]:
        ratios = row["ratio_to_raw"]
        cells = [
            f"{row['workload']} (×{row['fanout']:,})",
            row["label"],
            f"{row['received']:,} / {row['expected']:,}",
            f"{fmt(row['deliveries_per_s'])}{_x(ratios.get('deliveries_per_s'))}",
            _latencies(row["latency_ms"]),
            _lag(row.get("loop_lag")),
            f"{fmt(row['cpu_s_per_1k'], 4)}{_x(ratios.get('cpu_s_per_1k'))} \\| "
            f"{fmt(row['cpu_s_per_1k_burst'], 4)}{_x(ratios.get('cpu_s_per_1k_burst'))}",
            f"{fmt(row['broker_cpu_pct_steady'], 0)} \\| {fmt(row['broker_cpu_pct_burst'], 0)}",
            f"{fmt(row['kb_per_connection'], 1)}{_x(ratios.get('kb_per_connection'))}",
            f"{fmt(row['max_rate'])}{_x(ratios.get('max_rate'))}",
            fmt(row["p99_at_half_max_ms"], 1),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _stream_floor_table(summary["rows"])
    steps = [row for row in summary["rows"] if row.get("find_max_steps")]
    if steps:
        lines += [
            "",
            "`--find-max` steps (each `--step-duration` s; a step passes with nothing lost and "
            "p99 < 100 ms; the ladder climbs ×1.5, then `--refine` steps, marked ≈, bisect between the "
            "highest rate that passed and the lowest that failed):",
            "",
            "| workload | server | rate /s | passed | p50 / p99 / max ms | loop lag p99 / max ms "
            "| CPU s / 1k | broker CPU % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in steps:
            for step in row["find_max_steps"]:
                cells = [
                    row["workload"],
                    row["label"],
                    ("≈" if step.get("refine") else "") + fmt(round(step["rate"])),
                    "yes" if step["passed"] else "**no**",
                    " / ".join(fmt(step.get(key), 1) for key in ("p50_ms", "p99_ms", "max_ms")),
                    _lag(step.get("loop_lag")),
                    fmt(step.get("cpu_s_per_1k"), 4),
                    fmt(step.get("broker_cpu_pct"), 0),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    if summary["storm"]:
        lines += [
            "",
            "| W3 connection storm | clients joined | failed | seconds | joins/s | connect p50 / p99 ms "
            "| server CPU s |",
            "|---|---|---|---|---|---|---|",
        ]
        for storm in summary["storm"]:
            connect = storm["connect_ms"] or {}
            cells = [
                storm["label"],
                f"{storm['connections']:,}",
                str(storm["failed"]),
                str(storm["seconds"]),
                f"{fmt(storm['connects_per_s'])}{_x(storm['ratio_to_raw']['connects_per_s'])}",
                f"{fmt(connect.get('p50'), 1)} / {fmt(connect.get('p99'), 1)}",
                str(storm["server_cpu_s"]),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    if summary["targets"]:
        lines += ["", "| target (this service, JSON) | value | met |", "|---|---|---|"]
        for target in summary["targets"]:
            met = {True: "yes", False: "**no**", None: "–"}[target["met"]]
            lines.append(f"| {target['target']} | {fmt(target['value'], 2)} | {met} |")
    return "\n".join(lines) + "\n"
