"""The inbox: what the stream consumer is delivered, kept in stream order until the one worker takes it.

A module of its own because two parts hold it: ``consumers.attach`` registers ``Inbox.put`` as the
stream consumer's callback and asks ``last_arrival`` whether anything came since an attach;
``consumers.worker`` takes the messages out, one at a time.
"""

from __future__ import annotations

import asyncio
from collections import deque

from consumers.amqp import DeliveredMessage

__all__ = ["Inbox"]


class Inbox:
    """Deliveries in arrival order; closed (``accepting`` False) once the consumer stops or fails.

    A deque and one waiter rather than an ``asyncio.Queue``: one worker takes, one callback puts,
    and at a steady rate every entry arrives alone, so the queue's getter list, unfinished-task count
    and ``Event`` were paid per event for nothing (issue 12).
    """

    __slots__ = ("_entries", "_waiter", "accepting", "last_arrival")

    def __init__(self) -> None:
        self._entries: deque[DeliveredMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self.accepting = False
        self.last_arrival = float("-inf")  # loop time of the last delivery

    async def put(self, message: DeliveredMessage) -> None:
        """The stream consumer's callback: only queues ``message`` (the worker handles it)."""
        # No await before the append: callbacks start in delivery order, so the inbox keeps it.
        if self.accepting:
            self.last_arrival = asyncio.get_running_loop().time()
            self._entries.append(message)
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                if not waiter.done():
                    waiter.set_result(None)

    async def get(self) -> DeliveredMessage:
        """The next delivery, waiting for one."""
        entries = self._entries
        while not entries:
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                if self._waiter is waiter:
                    self._waiter = None
        return entries.popleft()

    def take(self) -> DeliveredMessage | None:
        """The next delivery if one is here already, else None."""
        return self._entries.popleft() if self._entries else None

    def __len__(self) -> int:
        return len(self._entries)
