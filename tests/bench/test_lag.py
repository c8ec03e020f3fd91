"""The benchmark's reading of a server's loop-lag histogram between two scrapes (pure; no server)."""

from __future__ import annotations

from bench.lag import lag_between, parse_lag

_BEFORE = """\
# TYPE realtime_event_loop_lag_seconds histogram
realtime_event_loop_lag_seconds_bucket{le="0.001"} 90.0
realtime_event_loop_lag_seconds_bucket{le="0.01"} 100.0
realtime_event_loop_lag_seconds_bucket{le="0.1"} 100.0
realtime_event_loop_lag_seconds_bucket{le="+Inf"} 100.0
realtime_event_loop_lag_seconds_count 100.0
"""
_AFTER = """\
realtime_event_loop_lag_seconds_bucket{le="0.001"} 980.0
realtime_event_loop_lag_seconds_bucket{le="0.01"} 1090.0
realtime_event_loop_lag_seconds_bucket{le="0.1"} 1100.0
realtime_event_loop_lag_seconds_bucket{le="+Inf"} 1100.0
"""


def test_the_phase_is_the_difference_of_two_scrapes() -> None:
    lag = lag_between(parse_lag(_BEFORE), parse_lag(_AFTER))
    assert lag is not None
    # 1,000 samples in the phase: 890 ≤ 1 ms, 100 in (1, 10] ms, 10 in (10, 100] ms.
    assert lag["samples"] == 1000
    assert lag["p99_ms"] == 10.0  # the 990th sample is the last of the (1, 10] ms bucket
    assert lag["max_ms"] == 100.0
    assert lag["beyond_last_bucket"] is False


def test_no_histogram_or_no_samples_is_no_figure() -> None:
    assert lag_between(None, parse_lag(_AFTER)) is None
    assert lag_between(parse_lag(_AFTER), parse_lag(_AFTER)) is None
