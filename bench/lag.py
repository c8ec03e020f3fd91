"""Event-loop lag of a server over one phase, from its ``realtime_event_loop_lag_seconds`` histogram.

Every benchmarked server samples its loop's lag (``service.loop_lag``; the comparison servers with
the same sampler and buckets, ``bench.servers.feed``) and exposes the histogram at ``/metrics``. The
benchmark scrapes it before and after a phase; the difference is that phase's lag distribution:
p99 interpolated within its bucket (as Prometheus' ``histogram_quantile``), max as the upper bound of
the highest bucket reached (the histogram keeps no exact maximum). The service's full garbage
collections (``realtime_gc_collection_seconds{generation="2"}``, ``service.gc_watch``) are read the
same way: how many ran in the phase, and the longest.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import aiohttp

__all__ = [
    "Buckets",
    "Histograms",
    "lag_between",
    "parse_full_gc",
    "parse_lag",
    "scrape_histograms",
]

_METRIC = "realtime_event_loop_lag_seconds_bucket{"
_FULL_GC = 'realtime_gc_collection_seconds_bucket{generation="2",'

Buckets = dict[float, float]  # upper bound (s) -> cumulative count


def parse_lag(metrics: str, metric: str = _METRIC) -> Buckets:
    buckets: Buckets = {}
    for line in metrics.splitlines():
        if not line.startswith(metric):
            continue
        labels, value = line.rsplit(" ", 1)
        bound = labels.split('le="', 1)[1].split('"', 1)[0]
        buckets[math.inf if bound == "+Inf" else float(bound)] = float(value)
    return buckets


def parse_full_gc(metrics: str) -> Buckets:
    return parse_lag(metrics, _FULL_GC)


Histograms = tuple[Buckets | None, Buckets | None]  # loop lag, full garbage collections


async def scrape_histograms(port: int) -> Histograms:
    """The server's lag and full-collection histograms now; None for one it has not (or when it does
    not answer in 5 s)."""
    with contextlib.suppress(aiohttp.ClientError, TimeoutError):
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(f"http://127.0.0.1:{port}/metrics") as response,
        ):
            if response.status == 200:
                text = await response.text()
                return parse_lag(text) or None, parse_full_gc(text) or None
    return None, None


def lag_between(before: Buckets | None, after: Buckets | None) -> dict[str, Any] | None:
    """Samples, p99 and max (ms) of the lag observed between two scrapes."""
    if not before or not after:
        return None
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1]
    if total <= 0:
        return None
    rank = 0.99 * total
    p99 = None
    lower, previous = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                p99 = lower  # beyond the last finite bucket: its bound is what we can say
            else:
                inside = cumulative - previous
                p99 = lower + (bound - lower) * ((rank - previous) / inside if inside else 1.0)
            break
        lower, previous = bound, cumulative
    highest = 0.0
    previous = 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative > previous:
            highest = bound if not math.isinf(bound) else bounds[-2]
        previous = cumulative
    return {
        "samples": int(total),
        "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        "max_ms": round(highest * 1000, 2),  # upper bound of the highest bucket reached
        "beyond_last_bucket": counts[-1] > counts[-2] if len(counts) > 1 else False,
    }
