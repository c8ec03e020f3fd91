"""The token bucket behind the hub's rate limits (``service.limits``), with the time passed in."""

from __future__ import annotations

import pytest

from service.limits import TokenBucket


def test_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.4) is False  # 0.8 of a token
    assert bucket.take(100.5) is True  # one whole token after half a second at 2/s
    assert [bucket.take(200.0) for _ in range(3)] == [True, True, True]  # refilled to the burst, no more
    assert bucket.take(200.0) is False


def test_retry_after_is_whole_seconds_until_the_next_token() -> None:
    per_minute = TokenBucket(rate=60 / 60, burst=2, now=0.0)
    assert [per_minute.take(0.0), per_minute.take(0.0)] == [True, True]
    assert per_minute.retry_after(0.0) == 1
    slow = TokenBucket(rate=6 / 60, burst=6, now=0.0)  # six a minute: one every ten seconds
    while slow.take(0.0):
        pass
    assert slow.retry_after(0.0) == 10
    assert slow.retry_after(4.5) == 6
    assert slow.take(10.0) is True


def test_full_tells_when_a_bucket_may_be_forgotten() -> None:
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    assert bucket.full(0.0)
    bucket.take(0.0)
    assert not bucket.full(0.5)
    assert bucket.full(1.0)


def test_a_time_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0)
    assert bucket.take(5.0) is False


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 5), (1.0, 0)])
def test_a_bucket_that_could_never_allow_anything_is_refused(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="rate > 0 and burst >= 1"):
        TokenBucket(rate=rate, burst=burst, now=0.0)
