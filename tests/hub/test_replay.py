"""The stateful-reconnect bookkeeping (ASP.NET ``MessageBuffer.cs``) without I/O."""

from __future__ import annotations

import pytest

from service.hub.replay import ReplayBuffer
from service.protocol import InvalidMessageError


def test_replay_buffer_numbers_acks_resends_and_bounds() -> None:
    buffer = ReplayBuffer(limit=10)
    for payload in (b"aaa", b"bbb", b"ccc"):
        buffer.record_sent(payload)
    assert buffer.resend() == (1, [b"aaa", b"bbb", b"ccc"])
    buffer.ack(2)
    assert buffer.resend() == (3, [b"ccc"])
    assert buffer.buffered_bytes == 3
    buffer.ack(3)
    assert buffer.resend() == (4, [])
    buffer.record_sent(b"x" * 8)
    buffer.record_sent(b"y" * 8)  # over the limit: the oldest goes and a resume would be lossy
    assert buffer.lossy
    assert buffer.buffered_bytes <= 10
    buffer.ack(5)
    assert not buffer.lossy


def test_an_ack_past_every_dropped_message_clears_lossy_under_steady_traffic() -> None:
    buffer = ReplayBuffer(limit=100)
    for _ in range(8):
        buffer.record_sent(b"x" * 20)  # ids 1-3 dropped to stay under the limit
    assert buffer.lossy
    buffer.ack(2)
    assert buffer.lossy  # id 3 was dropped and never acked
    buffer.ack(7)  # the newest (8) is still in flight, as it always is while events flow
    buffer.record_sent(b"x" * 20)
    assert not buffer.lossy
    assert buffer.resend() == (8, [b"x" * 20, b"x" * 20])
    buffer.ack(5)  # a stale ack changes nothing
    assert (buffer.acked_through, buffer.lossy) == (7, False)


def test_replay_buffer_receiving_side_skips_duplicates() -> None:
    buffer = ReplayBuffer(limit=100)
    assert [buffer.should_process() for _ in range(3)] == [True, True, True]
    assert buffer.ack_due() == 3
    assert buffer.ack_due() is None
    buffer.on_sequence(2)  # the peer replays from its message 2
    assert [buffer.should_process() for _ in range(3)] == [False, False, True]
    with pytest.raises(InvalidMessageError, match="Sequence ID greater"):
        buffer.on_sequence(9)


def test_an_ack_beyond_what_was_sent_does_not_hide_a_later_drop() -> None:
    buffer = ReplayBuffer(limit=100)
    buffer.record_sent(b"x" * 20)
    buffer.ack(10**9)  # a client acking what it was never sent
    for _ in range(8):
        buffer.record_sent(b"x" * 20)  # ids 2-9: the oldest of them dropped, never acked
    assert buffer.lossy
