"""The inbox between the stream consumer's callback and the one worker: order, waiting, closing.

A hand-written deque and waiter since issue 12 (an ``asyncio.Queue`` paid for what one putter and
one taker never use), so what the queue guaranteed is checked here, without a broker.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from consumers.amqp import DeliveredMessage
from consumers.inbox import Inbox


def _messages(count: int) -> list[DeliveredMessage]:
    return [cast(DeliveredMessage, object()) for _ in range(count)]  # kept as given, never read


def _open() -> Inbox:
    inbox = Inbox()
    inbox.accepting = True
    return inbox


async def test_entries_come_out_in_the_order_they_were_put() -> None:
    inbox = _open()
    messages = _messages(5)
    for message in messages:
        await inbox.put(message)
    assert len(inbox) == 5
    taken: list[Any] = [await inbox.get(), inbox.take(), inbox.take(), await inbox.get(), inbox.take()]
    assert taken == messages
    assert inbox.take() is None
    assert not inbox


async def test_a_waiting_get_wakes_on_the_next_put_and_notes_its_arrival() -> None:
    inbox = _open()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    before = asyncio.get_running_loop().time()
    [message] = _messages(1)
    await inbox.put(message)
    assert await asyncio.wait_for(waiting, 1.0) is message
    assert inbox.last_arrival >= before


async def test_a_closed_inbox_keeps_nothing() -> None:
    inbox = Inbox()  # not accepting until the consumer starts
    await inbox.put(*_messages(1))
    assert len(inbox) == 0
    assert inbox.last_arrival == float("-inf")


async def test_a_cancelled_wait_leaves_the_inbox_usable() -> None:
    """A stop() cancels the worker while it waits; a restarted worker must still be woken."""
    inbox = _open()
    first = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
    second = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    [message] = _messages(1)
    await inbox.put(message)
    assert await asyncio.wait_for(second, 1.0) is message
    assert first.cancelled()
