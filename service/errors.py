"""Service-level exceptions that cross module boundaries.

Protocol errors live in ``service.protocol.errors`` and auth errors in ``service.auth.errors``; this
module holds the ones the hub and transports share. Each names whose fault it is.
"""

from __future__ import annotations

__all__ = ["HubException"]


class HubException(Exception):
    """Raised by a hub method to fail one invocation with a message the caller may read.

    Like ASP.NET's ``HubException``: its message reaches the client (prefixed ``HubException: ``)
    even when detailed errors are off; any other exception's message stays on the server.
    """
