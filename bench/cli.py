"""``python -m bench``: the fan-out benchmark, one server process at a time, against one load generator.

For every server (``--servers``) the run goes:

1. declare a fresh exchange, start the server in its own process, wait until its queue has a consumer,
   check its open-file limit holds ``--connections``; start the load generator: ``--loadgen-procs``
   processes (default one per 9,500 clients), each owning a contiguous share of the clients, their
   results merged from raw samples (``bench.procs.LoadGenPool``);
2. RSS before; **W3** — the connection storm: ``--connections`` clients negotiate (where the protocol
   has it), connect and join their W1 group ``g{i % groups}`` and the broadcast group ``all``; RSS after;
3. for each of **W1** (groups of ``--group-size``) and **W2** (one group of everyone):
   *steady* — ``--rate`` deliveries/s (W2: ``--w2-rate`` if given) for ``--duration`` s: loss,
   latency, the server's loop lag, CPU per 1,000 deliveries, the broker's CPU (a local node's);
   *burst* — ``--burst`` deliveries' worth of events published as fast as confirms allow: the
   deliveries/s the server sustains when saturated (``--burst 0``: none);
   with ``--find-max``, steps of ``--step-duration`` s with the rate ×1.5 until a delivery is missing
   or p99 ≥ 100 ms, then one run at half the highest passing rate (its p99 is the latency target);
4. close the clients, stop the server, delete its queues and exchanges.

Results: ``bench/results/latest.json`` and ``latest.md`` (or ``--output``), each figure also as a ratio
to the raw floor. Every run is bounded (``--timeout``) and kills what it started.

``--scaling 1000,5000,10000,19000``: the above (without bursts unless ``--burst``) once per number of
connections, each server afresh at each step, into one table (``bench.scaling``): results
``scaling.json`` / ``scaling.md``, rewritten after every step.

This module is the entry point: it runs one ``bench.run.Run`` (or one per ``--scaling`` step) within
``--timeout`` and writes the results. The command line is ``bench.options``, a server's run
``bench.run``, the steady / burst / find-max phases ``bench.phases``, the machine facts ``bench.machine``.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from bench.options import Options, parse_args
from bench.procs import kill_all, loadgen_procs_for
from bench.report import render_markdown, summarize
from bench.run import Run
from bench.scaling import render_scaling_markdown, scaling_table
from bench.wire import raise_fd_limit


async def _scaling(options: Options, argv: list[str], workdir: Path) -> dict[str, Any]:
    """Every ``--scaling`` step as its own run (every server afresh), the table after each step."""
    procs = options.loadgen_procs or loadgen_procs_for(max(options.scaling))
    started = time.monotonic()
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {}
    for connections in options.scaling:
        step_dir = workdir / f"step-{connections}"
        step_dir.mkdir()
        run = Run(replace(options, connections=connections, loadgen_procs=procs), step_dir)
        run.argv = argv
        run.log(f"##### scaling step: {connections:,} connections ({procs} load-generator processes)")
        step = await run.run()
        step["summary"] = summarize(step)
        steps.append({"connections": connections, "runtime_s": step["runtime_s"], "servers": step["servers"]})
        table = scaling_table(steps)
        result = {
            "command": step["command"],
            "date": step["date"],
            "machine": step["machine"],
            "options": {
                "steps": options.scaling,
                "servers": options.servers,
                "workloads": options.workloads,
                "group_size": options.group_size,
                "duration_s": options.duration,
                "rate_deliveries_per_s": options.rate,
                "w2_rate_deliveries_per_s": options.w2_rate,
                "burst_deliveries": options.burst,
                "loadgen_procs": procs,
                "concurrency": options.concurrency,
                "prefetch": options.prefetch,
                "service_env": options.service_env,
            },
            "runtime_s": round(time.monotonic() - started, 1),
            "logs": str(workdir),
            "complete": len(steps) == len(options.scaling),
            "ok": all(row["lost"] == 0 and not row["failed_connections"] for row in table),
            "table": table,
            "steps": steps,
        }
        _write_scaling(options.output, result)  # a run cut short keeps the steps it measured
    return result


def _write_scaling(output: Path, result: dict[str, Any]) -> str:
    output.mkdir(parents=True, exist_ok=True)
    (output / "scaling.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
    markdown = render_scaling_markdown(result)
    (output / "scaling.md").write_text(markdown)
    return markdown


async def _main(options: Options, argv: list[str], workdir: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    # Explicit for both: a shell that starts us in the background ignores SIGINT otherwise.
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    if options.scaling:
        print(f"[bench] logs in {workdir}", file=sys.stderr, flush=True)
        return await asyncio.wait_for(_scaling(options, argv, workdir), options.timeout)
    run = Run(options, workdir)
    run.argv = argv
    run.log(f"logs in {workdir}")
    return await asyncio.wait_for(run.run(), options.timeout)


def main(argv: list[str] | None = None) -> int:
    from config.settings import LogFormat
    from service.logs import configure_logging

    options, raw_argv = parse_args(argv)
    configure_logging("WARNING", LogFormat.CONSOLE)  # library log lines on stderr, only when they matter
    raise_fd_limit()
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))  # logs, the dev signing key, profiles
    try:
        result = runner(_main(options, raw_argv, workdir))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("[bench] interrupted; stopped every process it started", file=sys.stderr)
        return 130
    except TimeoutError:
        print(
            f"[bench] timed out after {options.timeout:.0f} s; stopped every process it started",
            file=sys.stderr,
        )
        return 1
    finally:
        kill_all()
    if options.scaling:
        ok = bool(result["ok"])
        keep = not ok or options.profile or options.keep_logs
        if not keep:
            result["logs"] = None
        markdown = _write_scaling(options.output, result)
    else:
        summary = summarize(result)
        result["summary"] = summary
        ok = bool(summary["ok"])
        keep = not ok or options.profile or options.keep_logs
        if not keep:
            result["logs"] = None
        options.output.mkdir(parents=True, exist_ok=True)
        (options.output / "latest.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2) + b"\n")
        markdown = render_markdown(result)
        (options.output / "latest.md").write_text(markdown)
    print(markdown)
    if not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        print(f"[bench] logs kept in {workdir}", file=sys.stderr)
    return 0 if ok else 1
