"""Hub core: connection lifecycle, the lifetime manager (connections and groups), method dispatch.

``handler`` runs a connection's life; ``connection`` is one connection's protocol state and timers;
``lifetime`` is the interface of who is in which group and how sends reach them, ``in_memory`` its
implementation; ``dispatcher`` binds invocations to hub methods; ``methods`` holds the hub's methods.
"""

from __future__ import annotations

from .connection import HubConnection
from .dispatcher import CallerContext, HubDispatcher, HubMethods, hub_method
from .handler import HubConnectionHandler
from .history import History
from .in_memory import InMemoryHubLifetimeManager
from .journal import CHECKPOINT_TARGET, EventJournal, ResumeResult
from .lifetime import GroupManager, HubLifetimeManager, Recipient
from .methods import RecommendationsHub
from .options import HubClock, HubOptions
from .services import HubServices

__all__ = [
    "CHECKPOINT_TARGET",
    "CallerContext",
    "EventJournal",
    "GroupManager",
    "History",
    "HubClock",
    "HubConnection",
    "HubConnectionHandler",
    "HubDispatcher",
    "HubLifetimeManager",
    "HubMethods",
    "HubOptions",
    "HubServices",
    "InMemoryHubLifetimeManager",
    "Recipient",
    "RecommendationsHub",
    "ResumeResult",
    "hub_method",
]
