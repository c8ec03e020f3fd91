"""What every connection of one hub shares: options, clock, lifetime manager, dispatcher.

Built once by the handler and handed to each ``HubConnection`` at construction (one pointer per
connection), so that a connection never calls back into the handler that created it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.connections import Outgoing
from service.protocol import PING, HubProtocol

from .dispatcher import HubDispatcher
from .lifetime import HubLifetimeManager
from .options import HubClock, HubOptions

__all__ = ["HubServices", "PingBudget"]


class PingBudget:
    """The Pings the current heartbeat step may still write (``HubConnectionHandler.tick`` sets it).

    Clients that connected together (a storm, every client of a redeployed instance) are due for a
    Ping together, every keep-alive interval, as long as they stay idle: a step visiting 500 of them
    (the slice then) wrote 500 Pings at once and held the event loop 4-11 ms with 10,000 idle
    connections, every event waiting behind it (issue 12). Over the budget a Ping waits for the next
    round (a second); each later Ping follows that connection's own last write, so a cluster thins
    out for good.
    """

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = 0

    def take(self) -> bool:
        """One Ping of this step's, if any is left."""
        if self.left <= 0:
            return False
        self.left -= 1
        return True


@dataclass(frozen=True, slots=True, eq=False)
class HubServices:
    """What every connection of one hub uses, shared (one pointer per connection)."""

    options: HubOptions
    clock: HubClock
    lifetime: HubLifetimeManager
    dispatcher: HubDispatcher
    ping_budget: PingBudget = field(default_factory=PingBudget)
    _pings: dict[str, Outgoing] = field(default_factory=dict)

    def ping(self, protocol: HubProtocol) -> Outgoing:
        """The Ping record of ``protocol``, serialized once."""
        ping = self._pings.get(protocol.name)
        if ping is None:
            ping = self._pings[protocol.name] = Outgoing(protocol.write(PING))
        return ping
