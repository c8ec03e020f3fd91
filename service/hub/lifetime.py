"""The hub lifetime manager's interface: who is connected, who is in which group, sending to them.

ASP.NET's ``HubLifetimeManager``: one method per audience (all, one connection, a group, several
groups) plus group membership by connection id. The in-memory implementation is
``service.hub.in_memory.InMemoryHubLifetimeManager``; ``tests/hub/lifetime_conformance.py`` is the
suite every implementation must pass.

Rules every implementation keeps:

- sends are synchronous and never wait for a client: a message is serialized once per hub protocol
  and the same bytes are handed to every member; a member that cannot take them is aborted after
  the loop (``slow_client``), so one slow client never slows the others or the caller;
- a connection in several of the groups of one ``send_groups`` receives the message once;
- a send given a ``position`` appends it as one extra trailing argument for connections that asked
  for positions (``Recipient.positions``) and for no other: theirs stay byte-identical to a send
  without one (the .NET and Java clients drop an invocation whose argument count differs);
- adding twice is a no-op; adding a connection id it does not know (closing, or never connected)
  is a no-op; removing a non-member is a no-op; empty groups are forgotten;
- a connection leaves every group when it disconnects;
- group names are case-sensitive (ordinal), and an empty group name is refused.

Each send returns how many connections the message was handed to.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from service.connections import Outgoing
from service.protocol import HubProtocol

__all__ = ["GroupManager", "HubLifetimeManager", "Recipient"]


class Recipient(Protocol):
    """A connection as the lifetime manager sees it: an id, its hub protocol, a way to hand it bytes."""

    @property
    def connection_id(self) -> str: ...

    @property
    def protocol(self) -> HubProtocol | None: ...

    @property
    def positions(self) -> bool:
        """The connection asked for each event's position in the log (``?positions=true``)."""
        ...

    def send_outgoing(self, out: Outgoing) -> bool:
        """Take ``out`` (already serialized for this connection's protocol); False: too slow, abort it."""
        ...

    def send_burst(self, outs: list[Outgoing]) -> bool:
        """Take all of ``outs`` at once, past the buffer bound by their size; False: abort it."""
        ...

    def abort(self, reason: str) -> None: ...

    def drop_slow(self, cause: str) -> None:
        """It could not take what it was sent (``cause``: which bound): counted, logged, dropped."""
        ...


class GroupManager(Protocol):
    """Group membership by connection id: what hub methods may see and change (ASP.NET's
    ``IGroupManager``)."""

    def add_to_group(self, connection_id: str, group: str) -> None: ...

    def remove_from_group(self, connection_id: str, group: str) -> None: ...

    def groups_of(self, connection_id: str) -> frozenset[str]: ...


class HubLifetimeManager(ABC):
    """Connections and groups of one hub, and the sends to them."""

    # --- connections --------------------------------------------------------------------------

    @abstractmethod
    def on_connected(self, connection: Recipient) -> None:
        """``connection`` completed its handshake: it may now join groups and receive sends."""

    @abstractmethod
    def on_disconnected(self, connection: Recipient) -> None:
        """``connection`` is gone: forget it and every membership it had."""

    # --- groups -------------------------------------------------------------------------------

    @abstractmethod
    def add_to_group(self, connection_id: str, group: str) -> None: ...

    @abstractmethod
    def remove_from_group(self, connection_id: str, group: str) -> None: ...

    @abstractmethod
    def groups_of(self, connection_id: str) -> frozenset[str]:
        """The groups ``connection_id`` is in (empty for an unknown connection)."""

    # --- sending ------------------------------------------------------------------------------

    @abstractmethod
    def send_all(self, target: str, *arguments: Any) -> int: ...

    @abstractmethod
    def send_connection(self, connection_id: str, target: str, *arguments: Any) -> int: ...

    @abstractmethod
    def send_connection_many(
        self, connection_id: str, invocations: Sequence[tuple[str, Sequence[Any]]]
    ) -> int:
        """Invoke each ``(target, arguments)`` on one connection, in order, as one burst that may exceed
        the connection's buffer bound by its own size (a replay). Returns how many were handed over."""

    @abstractmethod
    def send_group(self, group: str, target: str, *arguments: Any) -> int: ...

    @abstractmethod
    def send_groups(
        self, groups: Sequence[str], target: str, *arguments: Any, position: str | None = None
    ) -> int:
        """Invoke ``target(*arguments)`` on every member of ``groups``, each connection at most once;
        with ``position``, connections that asked for positions get ``target(*arguments, position)``."""

    @abstractmethod
    def send_positioned(self, target: str, *arguments: Any) -> int:
        """Invoke ``target(*arguments)`` on every connection that asked for positions and is in at least
        one group (checkpoints). Not before its first join: a checkpoint that reached a connection
        before its ``Resume`` would move its position past what it is about to ask for."""
