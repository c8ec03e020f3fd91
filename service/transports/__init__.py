"""Transports: move bytes between HTTP requests and connections; they know nothing of hub messages.

Specification: ASP.NET Core SignalR's ``TransportProtocols.md``
(https://github.com/dotnet/aspnetcore/tree/main/src/SignalR/docs/specs) and the behaviour of
``HttpConnectionDispatcher.cs`` and the ASP.NET transports, named where it matters.
"""

from __future__ import annotations

from .endpoint import EndpointOptions, HubEndpoint
from .errors import HubHttpError, refusal_middleware

__all__ = ["EndpointOptions", "HubEndpoint", "HubHttpError", "refusal_middleware"]
