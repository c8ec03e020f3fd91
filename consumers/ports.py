"""What the consumers need from the hub, as an interface, so that ``consumers`` never imports ``service``.

``service.app`` hands the hub's lifetime manager to the consumer; it satisfies ``GroupSender``
structurally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["GroupSender", "WriteCoalescing"]


class GroupSender(Protocol):
    def send_to_groups(self, groups: Sequence[str], target: str, argument: Any) -> int:
        """Invoke client method ``target`` with the single ``argument`` on every connection in ``groups``.

        Synchronous and non-blocking: the message is serialized once per hub protocol and handed to
        each member connection's bounded outgoing buffer before this returns. A connection that is in
        several of ``groups`` receives the message once. Returns how many connections it was handed
        to. ``argument`` must be JSON-compatible (dicts, lists, str, int, float, bool, None).
        """
        ...


@runtime_checkable
class WriteCoalescing(Protocol):
    """Optional: a sender that can merge a connection's writes while the consumer drains a backlog.

    Between ``hold_writes()`` and ``release_writes()`` the sender may keep what ``send_to_groups``
    hands a connection and write it later as one write; ``flush_writes()`` writes everything kept.
    The consumer flushes before it acknowledges anything, so "acked" still means "handed to the
    sockets". A sender without these methods works unchanged.
    """

    def hold_writes(self) -> None: ...

    def flush_writes(self) -> None: ...

    def release_writes(self) -> None: ...
