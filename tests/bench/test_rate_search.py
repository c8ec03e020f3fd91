"""``bench.rate_search``: the rates ``--find-max`` tries, driven by made-up verdicts (no broker).

A server whose max sustainable rate is ``capacity`` passes every step at or below it.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.rate_search import RateSearch


def _run(search: RateSearch, capacity: float) -> list[tuple[float, bool, bool]]:
    """(rate, passed, refining) of every step the search asks for."""
    steps: list[tuple[float, bool, bool]] = []
    while (rate := search.next()) is not None:
        refining = search.refining
        passed = rate <= capacity
        steps.append((rate, passed, refining))
        search.record(passed)
    return steps


def test_without_refinement_the_ladder_climbs_by_half_and_stops_at_the_first_failure() -> None:
    steps = _run(RateSearch(5000, lowest=2, refine=0), capacity=20_000)
    assert [rate for rate, _, _ in steps] == [5000, 7500, 11250, 16875, 25312.5]
    assert [passed for _, passed, _ in steps] == [True, True, True, True, False]


def test_two_refinements_bisect_the_bracket_so_a_max_between_ladder_rates_shows() -> None:
    search = RateSearch(5000, lowest=2, refine=2)
    steps = _run(search, capacity=23_000)
    ladder, refined = steps[:5], steps[5:]
    assert [rate for rate, _, refining in ladder if not refining] == [5000, 7500, 11250, 16875, 25312.5]
    assert len(refined) == 2
    assert all(refining for _, _, refining in refined)
    first = math.sqrt(16875 * 25312.5)  # 20,667: passes
    assert refined[0][0] == pytest.approx(first)
    assert refined[0][1:] == (True, True)
    second = math.sqrt(first * 25312.5)  # 22,873: passes
    assert refined[1][0] == pytest.approx(second)
    assert refined[1][1:] == (True, True)
    assert search.best is not None
    assert search.best == pytest.approx(second)
    assert search.lowest_fail == 25312.5
    # The ladder alone would have said 16,875: 0.73x a floor at 23,000 instead of 0.99x.
    assert search.best / 23_000 > 0.99


def test_a_first_step_that_fails_halves_down_until_one_passes_then_refines() -> None:
    search = RateSearch(5000, lowest=2, refine=1)
    steps = _run(search, capacity=1800)
    assert [rate for rate, _, _ in steps] == [5000, 2500, 1250, pytest.approx(math.sqrt(1250 * 2500))]
    assert [passed for _, passed, _ in steps] == [False, False, True, True]


def test_nothing_passes_down_to_the_lowest_rate_then_the_search_stops_without_a_max() -> None:
    search = RateSearch(5000, lowest=1000, refine=2)
    steps = _run(search, capacity=10)
    assert [rate for rate, _, _ in steps] == [5000, 2500, 1250]
    assert search.best is None


def test_recording_after_the_end_is_a_mistake_of_the_caller() -> None:
    search = RateSearch(100, lowest=60, refine=0)
    search.record(False)
    assert search.next() is None
    with pytest.raises(RuntimeError):
        search.record(True)


@given(
    capacity=st.floats(min_value=1.0, max_value=1e6),
    start=st.floats(min_value=10.0, max_value=1e5),
    refine=st.integers(min_value=0, max_value=4),
)
def test_the_best_rate_never_exceeds_the_capacity_and_the_bracket_narrows_with_each_refinement(
    capacity: float, start: float, refine: int
) -> None:
    search = RateSearch(start, lowest=1.0, refine=refine, max_steps=40)
    steps = _run(search, capacity)
    assert len(steps) <= 40
    if search.best is not None:
        assert search.best <= capacity
        if search.lowest_fail is not None:
            assert search.best < search.lowest_fail
            assert capacity < search.lowest_fail
            # Each refinement halves the bracket's width in log terms (the ladder leaves x1.5 or x2).
            assert search.lowest_fail / search.best <= 2.0 ** (1 / 2**refine) + 1e-9
