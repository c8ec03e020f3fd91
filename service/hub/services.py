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

__all__ = ["HubServices"]


@dataclass(frozen=True, slots=True, eq=False)
class HubServices:
    """What every connection of one hub uses, shared (one pointer per connection)."""

    options: HubOptions
    clock: HubClock
    lifetime: HubLifetimeManager
    dispatcher: HubDispatcher
    _pings: dict[str, Outgoing] = field(default_factory=dict)

    def ping(self, protocol: HubProtocol) -> Outgoing:
        """The Ping record of ``protocol``, serialized once."""
        ping = self._pings.get(protocol.name)
        if ping is None:
            ping = self._pings[protocol.name] = Outgoing(protocol.write(PING))
        return ping
