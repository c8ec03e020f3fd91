"""The lifetime manager of one instance: connections and groups in memory (ASP.NET's
``DefaultHubLifetimeManager``).

Membership lives on the instance that owns the connection. A send builds its Invocation once,
serializes it lazily once per hub protocol (``SerializedHubMessage.cs``), and hands the same
``Outgoing`` to every member without awaiting anybody.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import Any

from service.connections import Outgoing
from service.metrics import GROUP_MEMBERSHIPS, HUB_DELIVERIES
from service.protocol import HubMessage, HubProtocol, InvocationMessage

from .lifetime import HubLifetimeManager, Recipient

__all__ = ["InMemoryHubLifetimeManager"]

# HUB_DELIVERIES' child per protocol name, looked up once (labels() takes a lock and validates).
_DELIVERIES: dict[str, Any] = {}


def _group_kind(group: str) -> str:
    kind, _, _ = group.partition("/")
    return kind or "other"


def _check_group(group: str) -> None:
    # DefaultHubLifetimeManager: "Cannot send to an empty group name."
    if not group:
        raise ValueError("A group name must not be empty.")


class InMemoryHubLifetimeManager(HubLifetimeManager):
    __slots__ = ("_connections", "_groups", "_memberships", "_positioned")

    def __init__(self) -> None:
        self._connections: dict[str, Recipient] = {}
        self._groups: dict[str, set[Recipient]] = {}
        # connection id -> its groups; only for connections that joined one (most of ours do). A tuple,
        # not a set: a connection has a handful of groups, joins are rare, and an empty set alone is
        # 216 bytes per connection.
        self._memberships: dict[str, tuple[str, ...]] = {}
        # The connections that track positions, for the periodic Checkpoint: listing them from all
        # connections stopped the event loop ~1-2 ms every checkpoint at 10,000 connections.
        self._positioned: dict[str, Recipient] = {}

    def __len__(self) -> int:
        return len(self._connections)

    # --- connections --------------------------------------------------------------------------

    def on_connected(self, connection: Recipient) -> None:
        self._connections[connection.connection_id] = connection
        if connection.positions:
            self._positioned[connection.connection_id] = connection

    def on_disconnected(self, connection: Recipient) -> None:
        connection_id = connection.connection_id
        if self._connections.get(connection_id) is not connection:
            return
        del self._connections[connection_id]
        self._positioned.pop(connection_id, None)
        for group in self._memberships.pop(connection_id, ()):
            self._leave(connection, group)

    # --- groups -------------------------------------------------------------------------------

    def add_to_group(self, connection_id: str, group: str) -> None:
        _check_group(group)
        group = sys.intern(group)  # one string per group name, not one per member
        connection = self._connections.get(connection_id)
        if connection is None:
            return
        joined = self._memberships.get(connection_id, ())
        if group in joined:
            return
        self._memberships[connection_id] = (*joined, group)
        self._groups.setdefault(group, set()).add(connection)
        GROUP_MEMBERSHIPS.labels(_group_kind(group)).inc()

    def remove_from_group(self, connection_id: str, group: str) -> None:
        _check_group(group)
        joined = self._memberships.get(connection_id)
        if joined is None or group not in joined:
            return
        remaining = tuple(name for name in joined if name != group)
        if remaining:
            self._memberships[connection_id] = remaining
        else:
            del self._memberships[connection_id]
        self._leave(self._connections[connection_id], group)

    def _leave(self, connection: Recipient, group: str) -> None:
        members = self._groups.get(group)
        if members is None:
            return
        members.discard(connection)
        GROUP_MEMBERSHIPS.labels(_group_kind(group)).dec()
        if not members:
            del self._groups[group]

    def groups_of(self, connection_id: str) -> frozenset[str]:
        return frozenset(self._memberships.get(connection_id, ()))

    def group_size(self, group: str) -> int:
        return len(self._groups.get(group, ()))

    @property
    def group_count(self) -> int:
        return len(self._groups)

    # --- sending ------------------------------------------------------------------------------

    def send_all(self, target: str, *arguments: Any) -> int:
        return self._send(self._connections.values(), InvocationMessage(target=target, arguments=arguments))

    def send_connection(self, connection_id: str, target: str, *arguments: Any) -> int:
        connection = self._connections.get(connection_id)
        if connection is None:
            return 0
        return self._send((connection,), InvocationMessage(target=target, arguments=arguments))

    def send_connection_many(
        self, connection_id: str, invocations: Sequence[tuple[str, Sequence[Any]]]
    ) -> int:
        connection = self._connections.get(connection_id)
        if connection is None or connection.protocol is None or not invocations:
            return 0
        protocol = connection.protocol
        outs = [
            Outgoing(protocol.write(InvocationMessage(target=target, arguments=tuple(arguments))))
            for target, arguments in invocations
        ]
        if not connection.send_burst(outs):
            connection.drop_slow("buffer_full")
            return 0
        _delivered(protocol.name).inc(len(outs))
        return len(outs)

    def send_group(self, group: str, target: str, *arguments: Any) -> int:
        _check_group(group)
        return self._send(self._groups.get(group, ()), InvocationMessage(target=target, arguments=arguments))

    def send_groups(
        self, groups: Sequence[str], target: str, *arguments: Any, position: str | None = None
    ) -> int:
        for group in groups:
            _check_group(group)
        if len(groups) == 1:
            members: Iterable[Recipient] = self._groups.get(groups[0], ())
        else:
            members = set().union(*(self._groups.get(group, ()) for group in groups))
        message = InvocationMessage(target=target, arguments=arguments)
        if position is None:
            return self._send(members, message)
        positioned = InvocationMessage(target=target, arguments=(*arguments, position))
        return self._send(members, message, positioned)

    def send_positioned(self, target: str, *arguments: Any) -> int:
        message = InvocationMessage(target=target, arguments=arguments)
        memberships = self._memberships
        members = [member for member_id, member in self._positioned.items() if member_id in memberships]
        return self._send(members, message)

    def _send(
        self, members: Iterable[Recipient], message: HubMessage, positioned: HubMessage | None = None
    ) -> int:
        # SerializedHubMessage.cs: serialize lazily, once per protocol, on the first member using it
        # (here once per protocol and variant: with or without the position argument).
        encoded: dict[tuple[str, bool], Outgoing] = {}
        delivered: dict[str, int] = {}
        slow: list[Recipient] = []
        # Members of a group mostly share one protocol and variant: remember the last one instead
        # of a dict lookup per member (this loop runs once per recipient).
        last_protocol: HubProtocol | None = None
        last_variant = False
        out: Outgoing | None = None
        name = ""
        count = 0
        for member in members:
            protocol = member.protocol
            if protocol is None:
                continue  # still in its handshake: not a member of anything yet
            variant = positioned is not None and member.positions
            if protocol is not last_protocol or variant is not last_variant:
                if last_protocol is not None:
                    delivered[name] = delivered.get(name, 0) + count
                name = protocol.name
                out = encoded.get((name, variant))
                if out is None:
                    chosen = positioned if variant and positioned is not None else message
                    out = encoded[name, variant] = Outgoing(protocol.write(chosen))
                last_protocol, last_variant, count = protocol, variant, 0
            if member.send_outgoing(out):  # type: ignore[arg-type]  # set together with last_protocol
                count += 1
            else:
                slow.append(member)
        if last_protocol is not None:
            delivered[name] = delivered.get(name, 0) + count
        for member in slow:
            member.drop_slow("buffer_full")
        total = 0
        for name, count in delivered.items():
            _delivered(name).inc(count)
            total += count
        return total


def _delivered(protocol_name: str) -> Any:
    counter = _DELIVERIES.get(protocol_name)
    if counter is None:
        counter = _DELIVERIES[protocol_name] = HUB_DELIVERIES.labels(protocol_name)
    return counter
