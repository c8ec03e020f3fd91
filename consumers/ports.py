"""What the consumers need from the hub, as an interface, so that ``consumers`` never imports ``service``.

``service.app`` hands the hub's lifetime manager to the consumer; it satisfies ``GroupSender``
structurally.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["GroupSender"]


class GroupSender(Protocol):
    def send_to_groups(self, groups: Sequence[str], target: str, argument: Any) -> int:
        """Invoke client method ``target`` with the single ``argument`` on every connection in ``groups``.

        Synchronous and non-blocking: the message is serialized once per hub protocol and handed to
        each member connection's bounded outgoing buffer before this returns. A connection that is in
        several of ``groups`` receives the message once. Returns how many connections it was handed
        to. ``argument`` must be JSON-compatible (dicts, lists, str, int, float, bool, None).
        """
        ...
