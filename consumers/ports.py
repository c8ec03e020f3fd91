"""What the consumers need from the hub, as interfaces, so that ``consumers`` never imports ``service``.

``service.app`` hands the consumer the hub's lifetime manager (a ``GroupSender``) and the app's
write batch (a ``WriteCoalescing``); both satisfy these structurally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["GroupSender", "WriteCoalescing"]


class GroupSender(Protocol):
    def send_groups(self, groups: Sequence[str], target: str, *arguments: Any) -> int:
        """Invoke client method ``target(*arguments)`` on every connection in ``groups``.

        Synchronous and non-blocking: the message is serialized once per hub protocol and handed to
        each member connection's bounded outgoing buffer before this returns. A connection that is in
        several of ``groups`` receives the message once. Returns how many connections it was handed
        to. ``arguments`` must be JSON-compatible (dicts, lists, str, int, float, bool, None).
        """
        ...


class WriteCoalescing(Protocol):
    """Optional: merging of a connection's socket writes while the consumer drains a backlog.

    Between ``hold()`` and ``release()`` the sockets may keep what ``send_groups`` hands them and
    write it later as one write; ``flush()`` writes everything kept. The consumer flushes before it
    acknowledges anything, so "acked" still means "handed to the sockets".
    """

    def hold(self) -> None: ...

    def flush(self) -> None: ...

    def release(self) -> None: ...
