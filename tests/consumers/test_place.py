"""Where an instance is in the log, decided from offsets and checks alone (no broker)."""

from __future__ import annotations

from datetime import UTC, datetime

from consumers.place import GAP_TOLERANCE, Catchup, LogPlace, Step, Verdict
from consumers.positions import SavedPosition
from schemas.log import Position

NOW = 1_800_000_000.0


def test_a_fresh_instance_attaches_at_the_start_of_the_history_window() -> None:
    place = LogPlace()
    offset = place.attach_offset(None, now=NOW, window_seconds=600)
    assert offset == datetime.fromtimestamp(NOW - 600, UTC)
    attachment = place.attach(offset, since=1.0)
    assert (attachment.start, attachment.verify) == (None, None)
    assert place.first(0, "aaaaaaaa") is Verdict.SAME
    assert place.first(1, "bbbbbbbb") is None  # only the first entry of an attachment is judged


def test_after_a_loss_it_re_attaches_at_the_last_entry_read_and_checks_it() -> None:
    place = LogPlace()
    place.attach("first", since=0.0)
    place.first(0, "00000000")
    for offset in range(0, 5):
        place.read(offset, f"{offset:08x}")
    assert place.attach_offset(None, now=NOW, window_seconds=600) == 4
    place.attach(4, since=1.0)
    assert place.first(4, "00000004") is Verdict.SAME
    assert place.already_read(4)
    assert not place.already_read(5)


def test_a_different_entry_at_that_offset_is_a_recreated_stream() -> None:
    place = LogPlace()
    place.attach("first", since=0.0)
    place.read(7, "00000007")
    place.attach(place.attach_offset(None, now=NOW, window_seconds=600), since=1.0)
    assert place.first(7, "deadbeef") is Verdict.RECREATED
    place.start_afresh()
    assert place.attach_offset(None, now=NOW, window_seconds=600) == "first"
    assert not place.already_read(0)  # the new stream's entries are all new


def test_the_last_entry_read_being_gone_is_a_gap() -> None:
    place = LogPlace()
    place.attach("first", since=0.0)
    place.read(7, "00000007")
    place.attach(7, since=1.0)
    assert place.first(9, "00000009") is Verdict.GAP


def test_a_long_restart_attaches_after_its_saved_position_and_tolerates_segment_gaps() -> None:
    saved = SavedPosition(Position(100, "00000064"), saved_at=NOW - 3600)
    place = LogPlace()
    assert place.attach_offset(saved, now=NOW, window_seconds=600) == 101
    place.attach(101, since=1.0)
    assert place.first(101 + GAP_TOLERANCE, "x") is Verdict.SAME
    place.attach(101, since=2.0)
    assert place.first(102 + GAP_TOLERANCE, "x") is Verdict.GAP


def test_deliveries_of_a_consumer_given_up_on_are_not_owned() -> None:
    place = LogPlace()
    attachment = place.attach("first", since=0.0)
    assert place.owns("ctag-1")  # before basic.consume returned its tag, the first deliveries count
    attachment.tag = "ctag-1"
    assert place.owns("ctag-1")
    assert not place.owns("ctag-0")
    place.start_afresh()
    assert not place.owns("ctag-1")


def test_a_new_instance_delivers_from_its_own_marker() -> None:
    catchup = Catchup()
    catchup.marker = "me:1"
    assert catchup.observe(0, "a", None) is Step.HISTORY
    assert catchup.observe(1, "b", "someone-else:9") is Step.HISTORY
    assert catchup.observe(2, "c", "me:1") is Step.LIVE
    assert catchup.observe(3, "d", None) is Step.LIVE


def test_a_restarted_instance_delivers_what_follows_its_saved_position() -> None:
    catchup = Catchup(SavedPosition(Position(5, "00000005"), saved_at=NOW))
    catchup.marker = "me:2"
    assert [catchup.observe(o, f"{o:08x}", None) for o in range(3, 6)] == [Step.HISTORY] * 3
    assert catchup.observe(6, "00000006", None) is Step.BACKLOG
    assert catchup.observe(7, "00000007", "me:2") is Step.LIVE


def test_a_saved_position_of_another_stream_is_dropped() -> None:
    catchup = Catchup(SavedPosition(Position(5, "00000005"), saved_at=NOW))
    catchup.marker = "me:3"
    assert catchup.observe(5, "ffffffff", None) is Step.HISTORY  # another entry at that offset
    assert catchup.saved is None
    assert catchup.observe(6, "x", None) is Step.HISTORY  # not backlog: wait for the marker
    assert catchup.observe(7, "y", "me:3") is Step.LIVE


def test_a_saved_position_beyond_a_recreated_stream_ends_at_the_marker() -> None:
    catchup = Catchup(SavedPosition(Position(5000, "00001388"), saved_at=NOW))
    catchup.marker = "me:4"
    assert catchup.observe(0, "a", None) is Step.HISTORY
    assert catchup.observe(1, "b", "me:4") is Step.LIVE
    assert catchup.saved is None
