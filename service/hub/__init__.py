"""Hub core: connection lifecycle, the lifetime manager (connections and groups), method dispatch."""

from __future__ import annotations

from .connection import HubConnection
from .dispatcher import CallerContext, HubDispatcher, HubMethods
from .handler import HubConnectionHandler, HubOptions
from .lifetime import HubLifetimeManager
from .methods import recommendations_hub

__all__ = [
    "CallerContext",
    "HubConnection",
    "HubConnectionHandler",
    "HubDispatcher",
    "HubLifetimeManager",
    "HubMethods",
    "HubOptions",
    "recommendations_hub",
]
