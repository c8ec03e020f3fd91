"""Prometheus metrics of the hub and its transports (the consumers keep theirs in ``consumers.metrics``).

All live in prometheus_client's default registry, which ``GET /metrics`` exposes. Label values are
small closed sets (transport, protocol, reason); never a connection id, region or user.
"""

from __future__ import annotations

import asyncio
from typing import get_args

from prometheus_client import REGISTRY, Counter, Gauge, Histogram

from service.gc_freeze import FreezeAction
from service.gc_watch import GcWatch
from service.loop_lag import LAG_BUCKETS

__all__ = [
    "ASYNCIO_TASKS",
    "AUTH_ACCEPTED",
    "AUTH_FAILURES",
    "CONNECTIONS",
    "CONNECTIONS_CLOSED",
    "CONNECTIONS_OPENED",
    "EVENT_LOOP_LAG",
    "GC_COLLECTIONS",
    "GC_FREEZES",
    "GC_PAUSE",
    "GROUP_MEMBERSHIPS",
    "HISTORY_BYTES",
    "HISTORY_ENTRIES",
    "HUB_DELIVERIES",
    "HUB_INVOCATIONS",
    "LOG_RECORDS_DROPPED",
    "PROTOCOL_ERRORS",
    "RATE_LIMITED",
    "REPLAYED_EVENTS",
    "RESUMES",
    "SHUTDOWN_UNFINISHED",
    "SLOW_CLIENT_DISCONNECTS",
]

CONNECTIONS = Gauge(
    "realtime_hub_connections",
    "Hub connections that completed the handshake, by transport and hub protocol.",
    ["transport", "protocol"],
)
CONNECTIONS_OPENED = Counter(
    "realtime_hub_connections_opened",
    "Hub connections that completed the handshake.",
    ["transport", "protocol"],
)
CONNECTIONS_CLOSED = Counter(
    "realtime_hub_connections_closed",
    "Hub connections closed, by reason (client, error, timeout, slow_client, token_expired, shutdown, ...).",
    ["reason"],
)
GROUP_MEMBERSHIPS = Gauge("realtime_hub_group_memberships", "Connection-to-group memberships.", ["kind"])
HUB_DELIVERIES = Counter(
    "realtime_hub_deliveries",
    "Messages handed to a connection's outgoing buffer by group sends.",
    ["protocol"],
)
SLOW_CLIENT_DISCONNECTS = Counter(
    "realtime_hub_slow_client_disconnects",
    "Connections closed because they could not keep up, by reason: buffer_full (HUB_MAX_BUFFERED_BYTES "
    "exceeded), send_timeout (queued bytes, the kernel's included, made no progress for "
    "HUB_TRANSPORT_SEND_TIMEOUT), not_polling (a long-polling client stopped polling with messages waiting).",
    ["reason"],
)
for _reason in ("buffer_full", "send_timeout", "not_polling"):
    SLOW_CLIENT_DISCONNECTS.labels(_reason)
SHUTDOWN_UNFINISHED = Counter(
    "realtime_hub_shutdown_unfinished",
    "Connections whose Close was still undelivered when the shutdown drain ended (a long-polling client "
    "that did not poll again within HUB_SHUTDOWN_DRAIN_SECONDS), by transport.",
    ["transport"],
)
HUB_INVOCATIONS = Counter(
    "realtime_hub_invocations",
    "Hub method invocations from clients, by method and outcome.",
    ["method", "outcome"],
)
RATE_LIMITED = Counter(
    "realtime_hub_rate_limited",
    "Clients stopped by a per-connection or per-user limit: connections closed for calling too often "
    "(invocations), requests answered 429 (connections_per_user, negotiates_per_user).",
    ["limit"],
)
for _limit in ("invocations", "connections_per_user", "negotiates_per_user"):
    RATE_LIMITED.labels(_limit)
PROTOCOL_ERRORS = Counter(
    "realtime_hub_protocol_errors", "Connections closed for a protocol error.", ["kind"]
)
PROTOCOL_ERRORS.labels("unmasked_frame")  # RFC 6455 §5.1, shown at 0 until a client sends one
AUTH_FAILURES = Counter("realtime_auth_failures", "Requests refused with 401, by reason.", ["reason"])
AUTH_ACCEPTED = Counter(
    "realtime_auth_accepted",
    "Requests authenticated, by credential: the caller's bearer token, or its connection's ticket.",
    ["credential"],
)
HISTORY_ENTRIES = Gauge("realtime_history_entries", "Log entries kept in memory for replays.")
HISTORY_BYTES = Gauge("realtime_history_bytes", "Approximate bytes of the log entries kept for replays.")
RESUMES = Counter(
    "realtime_resumes",
    "Resume calls, by outcome: recovered, or why not (fresh, empty, window, epoch, ahead, cap).",
    ["outcome"],
)
REPLAYED_EVENTS = Counter("realtime_replayed_events", "Events replayed to resuming connections.")
for _outcome in ("recovered", "fresh", "empty", "window", "epoch", "ahead", "cap"):
    RESUMES.labels(_outcome)
EVENT_LOOP_LAG = Histogram(
    "realtime_event_loop_lag_seconds",
    "How late the event loop woke a periodic sampler (EVENT_LOOP_LAG_INTERVAL_SECONDS): a stall of the loop "
    "delays every read and write by as much.",
    buckets=LAG_BUCKETS,
)
GC_FREEZES = Counter(
    "realtime_gc_freezes",
    "Connection state moved out of the garbage collector's full passes (GC_FREEZE): freeze per "
    "heartbeat round that brought 1,000 new connections, tail for a storm's last ones (at least 100) in the "
    "first round with no growth, refreeze (with one full collection) after a "
    "quarter of the frozen connections closed; with GC_FREEZE_PROBE, fork when that collection was handed "
    "to a forked copy of the process, probe when the copy found it would free next to nothing (skipped); "
    "survivors after a full collection of CPython's own that freed next to nothing.",
    ["action"],
)
GC_PAUSE = Histogram(
    "realtime_gc_pause_seconds",
    "How long one GC_FREEZE action held the event loop: a freeze (a young collection), a refreeze (a "
    "full collection), a fork (GC_FREEZE_PROBE: the copy that runs the full collection instead).",
    ["action"],
    buckets=LAG_BUCKETS,
)
for _action in get_args(FreezeAction):
    GC_FREEZES.labels(_action)
    GC_PAUSE.labels(_action)
LOG_RECORDS_DROPPED = Counter(
    "realtime_log_records_dropped",
    "Log records not written: the log buffer (LOG_BUFFER_RECORDS) was full because stderr was not "
    "drained fast enough, or writing to stderr failed. The service never waits for its log.",
)
GC_COLLECTIONS = GcWatch()
"""``realtime_gc_collection_seconds{generation}``: one watch per process, as the collector is one per
process; the service installs it (``service.app``), and GC_FREEZE reads its fruitless full passes."""
REGISTRY.register(GC_COLLECTIONS)


def _asyncio_tasks() -> float:
    """Tasks registered with asyncio: the registry's size, not ``len(asyncio.all_tasks())``.

    ``all_tasks()`` walks every task (one per open socket): ~2-4 ms at 10,000 connections, with the
    event loop stopped, on every scrape (issue 12). The registry is private and named per version
    (3.11 ``_all_tasks``; 3.12+ ``_scheduled_tasks`` and ``_eager_tasks``); without it, the walk.
    Finished tasks still referenced somewhere count until they are freed: a leak shows either way.
    """
    tasks = asyncio.tasks
    registry = getattr(tasks, "_scheduled_tasks", None)
    if registry is None:
        registry = getattr(tasks, "_all_tasks", None)
    if registry is not None:
        return float(len(registry) + len(getattr(tasks, "_eager_tasks", ())))
    try:  # read by /metrics on the event loop; 0 when scraped from elsewhere
        return float(len(asyncio.all_tasks()))
    except RuntimeError:
        return 0.0


ASYNCIO_TASKS = Gauge(
    "realtime_asyncio_tasks", "asyncio tasks alive in the service's event loop (a leak shows as growth)."
)
ASYNCIO_TASKS.set_function(_asyncio_tasks)
