"""What a ``Resume`` costs the event loop, and what keeping the history costs per event.

``python -m bench.replay_cost`` fills a ``History`` with N events shaped like ``JobAssigned`` (one
region group and one contractor group each, 50 regions, 5,000 contractors), then times, best of
``--repeat``:

- one replay from the oldest position into a quiet group (one the history holds no event of): the
  worst case a client can ask for at will, once per ``Resume``;
- one replay from the middle into a busy region group, capped as the service caps it;
- appending one event to a full history (so every append also drops the oldest).

A replay runs on the event loop in one piece (it joins the groups in the same step, so nothing is
missed or doubled), so its time is a stall every other client of the instance sees.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Callable, Sequence

from schemas.log import LogRecord
from service.hub.history import History, ReplayMiss

__all__ = ["main", "measure"]

_REGIONS = 50
_CONTRACTORS = 5000


def _records(count: int, start: int = 0) -> list[LogRecord]:
    return [
        LogRecord(
            offset=offset,
            check=f"{offset:08x}",
            target="JobAssigned",
            groups=(f"dispatch/r{offset % _REGIONS}", f"contractor/{uuid.UUID(int=offset % _CONTRACTORS)}"),
            payload={"jobId": str(uuid.UUID(int=offset)), "region": f"r{offset % _REGIONS}", "n": offset},
        )
        for offset in range(start, start + count)
    ]


def _history(entries: int) -> History:
    return History(max_entries=entries, max_bytes=1 << 40, max_age_seconds=1e9)


def _best(repeat: int, action: Callable[[], None]) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return min(times)


def measure(*, entries: int, cap: int = 1000, repeat: int = 5) -> dict[str, float]:
    """Milliseconds per replay and microseconds per append, best of ``repeat``."""
    history = _history(entries)
    for record in _records(entries):
        history.append(record)
    oldest, head = history.oldest, history.head
    assert oldest is not None
    assert head is not None
    middle = history.get(oldest.offset + entries // 2)
    assert middle is not None

    def quiet() -> None:
        result = history.replay(oldest.position, through=head.offset, groups={"contractor/none"}, cap=cap)
        assert result == []

    def busy() -> None:
        result = history.replay(middle.position, through=head.offset, groups={"dispatch/r7"}, cap=cap)
        assert isinstance(result, list | ReplayMiss)

    more = _records(entries, start=entries)

    def append() -> None:
        for record in more[: entries // 10]:
            history.append(record)
        del more[: entries // 10]

    appends = max(1, entries // 10)
    return {
        "replay from the oldest, quiet group (ms)": _best(repeat, quiet) * 1e3,
        "replay from the middle, busy group (ms)": _best(repeat, busy) * 1e3,
        "append to a full history (µs/event)": _best(min(repeat, 9), append) / appends * 1e6,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replay_cost", description=__doc__)
    parser.add_argument("--entries", type=int, default=200_000, help="HISTORY_MAX_ENTRIES (default 200,000)")
    parser.add_argument("--cap", type=int, default=1000, help="REPLAY_MAX_EVENTS (default 1,000)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    figures = measure(entries=args.entries, cap=args.cap, repeat=args.repeat)
    print(f"History of {args.entries} events, replay cap {args.cap} (best of {args.repeat})")
    for name, value in figures.items():
        print(f"  {name:<42} {value:9.3f}")


if __name__ == "__main__":
    main()
