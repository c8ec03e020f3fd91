"""The process's open-file budget: raise the soft limit, then admit only what it leaves room for.

Every WebSocket (and every SSE stream, long poll or negotiate in flight) holds one open file. A
process started from a shell or by systemd often gets a soft limit of 1,024 under a hard limit far
above it (getrlimit(2), RLIMIT_NOFILE): without raising it, this service would stop accepting at about
a thousand clients. It raises the soft limit to the hard one at start, as the Go runtime does for
every program.

Where the hard limit itself is low, the process must not spend its last descriptors on clients: the
broker link, a JWKS refresh, ``/metrics`` (which lists ``/proc/self/fd``) and the garbage-collection
probe's pipe need some too, and an ``accept`` that fails with EMFILE tells the client nothing. So the
hub admits at most the limit less a reserve (``HUB_MAX_CONNECTIONS`` when that is lower) and answers
the next negotiate 503: the official clients' ``start()`` rejects with it, and a reconnect attempt that
gets it counts as failed.
"""

from __future__ import annotations

import contextlib
import resource
from dataclasses import dataclass

__all__ = ["OpenFiles", "connection_budget", "raise_soft_limit", "reserve_for"]

_MIN_RESERVE = 64
"""Descriptors kept for everything but clients: ~20 at idle (listener, broker, epoll, logs), the rest
for requests in flight."""
_RESERVE_SHARE = 50
"""... or a fiftieth of the limit, whichever is more: 400 of 20,000."""
_CEILING = 1 << 20
"""Where the hard limit is unlimited, the soft one goes this far (Linux's default ``nr_open``)."""


@dataclass(frozen=True)
class OpenFiles:
    """The soft limit found at start, the one in force after raising it, and the hard limit."""

    before: int
    soft: int
    hard: int


def raise_soft_limit() -> OpenFiles:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; what was found and what is in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = _CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < target:
        # A hard limit above the kernel's nr_open is refused: the soft limit then stays as it is.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    raised, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return OpenFiles(before=_finite(soft), soft=_finite(raised), hard=_finite(hard))


def reserve_for(limit: int) -> int:
    """Descriptors kept for everything but clients under a soft limit of ``limit``."""
    return max(_MIN_RESERVE, limit // _RESERVE_SHARE)


def connection_budget(configured: int, files: OpenFiles) -> int:
    """The most connections to admit: ``configured`` (0: no cap of its own) within what the open-file
    limit leaves after the reserve; at least one."""
    room = max(1, files.soft - reserve_for(files.soft))
    return room if configured <= 0 else min(configured, room)


def _finite(limit: int) -> int:
    return _CEILING if limit == resource.RLIM_INFINITY else limit
