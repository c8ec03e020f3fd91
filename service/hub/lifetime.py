"""Hub lifetime manager: who is connected, who is in which group, and sending to them.

Like ASP.NET's ``DefaultHubLifetimeManager``: membership lives in memory on the instance that owns
the connection; group names are case-sensitive; empty groups are deleted; a connection leaves every
group when it closes.

Rule: a send serializes the message once per hub protocol and hands the same bytes to every member
without awaiting anybody; a member that cannot take them is closed after the loop, so one slow client
never slows the others or the caller (the RabbitMQ consumer).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from service.connections import WRITE_BATCH, Outgoing
from service.metrics import GROUP_MEMBERSHIPS, HUB_DELIVERIES, SLOW_CLIENT_DISCONNECTS
from service.protocol import HubMessage, HubProtocol, InvocationMessage

if TYPE_CHECKING:
    from service.hub.connection import HubConnection

__all__ = ["HubLifetimeManager"]

log = structlog.get_logger(__name__)

# HUB_DELIVERIES' child per protocol name, looked up once (labels() takes a lock and validates).
_DELIVERIES: dict[str, Any] = {}


def _group_kind(group: str) -> str:
    kind, _, _ = group.partition("/")
    return kind or "other"


class HubLifetimeManager:
    """Connections and groups of one hub on this instance."""

    def __init__(self) -> None:
        self._connections: dict[str, HubConnection] = {}
        self._groups: dict[str, set[HubConnection]] = {}

    # --- connections --------------------------------------------------------------------------

    def add_connection(self, connection: HubConnection) -> None:
        self._connections[connection.connection_id] = connection

    def remove_connection(self, connection: HubConnection) -> None:
        if self._connections.pop(connection.connection_id, None) is None:
            return
        for group in list(connection.groups):
            self.remove_from_group(connection, group)

    def get(self, connection_id: str) -> HubConnection | None:
        return self._connections.get(connection_id)

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[HubConnection]:
        return iter(list(self._connections.values()))

    # --- groups -------------------------------------------------------------------------------

    def add_to_group(self, connection: HubConnection, group: str) -> None:
        """Adding twice is a no-op; a connection that is closing or unknown is not added."""
        if self._connections.get(connection.connection_id) is not connection:
            return
        if group in connection.groups:
            return
        self._groups.setdefault(group, set()).add(connection)
        connection.groups.add(group)
        GROUP_MEMBERSHIPS.labels(_group_kind(group)).inc()

    def remove_from_group(self, connection: HubConnection, group: str) -> None:
        members = self._groups.get(group)
        if members is None or connection not in members:
            return
        members.discard(connection)
        connection.groups.discard(group)
        GROUP_MEMBERSHIPS.labels(_group_kind(group)).dec()
        if not members:
            del self._groups[group]

    def group_size(self, group: str) -> int:
        return len(self._groups.get(group, ()))

    @property
    def group_count(self) -> int:
        return len(self._groups)

    # --- sending ------------------------------------------------------------------------------

    def hold_writes(self) -> None:
        """Under load: let sinks coalesce what the next sends give them (see ``WriteBatch``)."""
        WRITE_BATCH.hold()

    def flush_writes(self) -> None:
        """Write everything held so far to the sockets (one write per connection); stay held."""
        WRITE_BATCH.flush()

    def release_writes(self) -> None:
        WRITE_BATCH.release()

    def send_to_groups(self, groups: Sequence[str], target: str, argument: Any) -> int:
        """Invoke ``target(argument)`` on every member of ``groups``, each connection at most once."""
        if len(groups) == 1:
            members: Iterable[HubConnection] = self._groups.get(groups[0], ())
        else:
            members = set().union(*(self._groups.get(group, ()) for group in groups))
        return self._send(members, InvocationMessage(target=target, arguments=(argument,)))

    def send_to_group(self, group: str, target: str, *arguments: Any) -> int:
        return self._send(self._groups.get(group, ()), InvocationMessage(target=target, arguments=arguments))

    def send_to_all(self, target: str, *arguments: Any) -> int:
        return self._send(self._connections.values(), InvocationMessage(target=target, arguments=arguments))

    def send_to_connection(self, connection_id: str, target: str, *arguments: Any) -> int:
        connection = self._connections.get(connection_id)
        if connection is None:
            return 0
        return self._send((connection,), InvocationMessage(target=target, arguments=arguments))

    def _send(self, members: Iterable[HubConnection], message: HubMessage) -> int:
        # SerializedHubMessage.cs: serialize lazily, once per protocol, on the first member using it.
        encoded: dict[str, Outgoing] = {}
        delivered: dict[str, int] = {}
        slow: list[HubConnection] = []
        # Members of a group mostly share one protocol: remember the last one instead of a dict
        # lookup per member (this loop runs once per recipient).
        last_protocol: HubProtocol | None = None
        out: Outgoing | None = None
        name = ""
        count = 0
        for member in members:
            protocol = member.protocol
            if protocol is None:
                continue  # still in its handshake: not a member of anything yet
            if protocol is not last_protocol:
                if last_protocol is not None:
                    delivered[name] = delivered.get(name, 0) + count
                name = protocol.name
                out = encoded.get(name)
                if out is None:
                    out = encoded[name] = Outgoing(protocol.write(message))
                last_protocol, count = protocol, 0
            if member.send_outgoing(out):  # type: ignore[arg-type]  # set together with last_protocol
                count += 1
            else:
                slow.append(member)
        if last_protocol is not None:
            delivered[name] = delivered.get(name, 0) + count
        for member in slow:
            log.warning("connection.slow_client", connectionId=member.connection_id, reason="buffer_full")
            SLOW_CLIENT_DISCONNECTS.labels("buffer_full").inc()
            member.abort("slow_client")
        total = 0
        for name, count in delivered.items():
            counter = _DELIVERIES.get(name)
            if counter is None:
                counter = _DELIVERIES[name] = HUB_DELIVERIES.labels(name)
            counter.inc(count)
            total += count
        return total
