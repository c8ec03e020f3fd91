"""``python -m bench.replay_cost`` times a Resume's replay and a history append (in process)."""

from __future__ import annotations

from bench.replay_cost import main, measure


def test_every_figure_is_measured() -> None:
    figures = measure(entries=2000, repeat=2)
    assert len(figures) == 3
    assert all(value > 0 for value in figures.values())


def test_it_prints_its_figures(capsys) -> None:  # type: ignore[no-untyped-def]
    main(["--entries", "1000", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "History of 1000 events" in out
    assert "replay from the oldest, quiet group (ms)" in out
