"""Record framing: 0x1E-terminated text records and VarInt-prefixed binary records."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.protocol import (
    RECORD_SEPARATOR,
    BinaryRecordReader,
    InvalidMessageError,
    MessageTooLargeError,
    TextRecordReader,
    write_binary_record,
    write_text_record,
    write_varint,
)
from tests.protocol.strategies import split_at

Reader = TextRecordReader | BinaryRecordReader


def drain(reader: Reader) -> list[bytes]:
    records = []
    while (record := reader.next_record()) is not None:
        records.append(record)
    return records


def feed_all(reader: Reader, chunks: list[bytes]) -> list[bytes]:
    records: list[bytes] = []
    for chunk in chunks:
        reader.feed(chunk)
        records.extend(drain(reader))
    return records


# --- text records --------------------------------------------------------------------------------------


def test_write_text_record() -> None:
    assert RECORD_SEPARATOR == b"\x1e"
    assert write_text_record(b'{"type":6}') == b'{"type":6}\x1e'


def test_text_reader_returns_payloads_without_separator() -> None:
    reader = TextRecordReader(None)
    reader.feed(b'{"a":1}\x1e{"b":2}\x1e')
    assert drain(reader) == [b'{"a":1}', b'{"b":2}']
    assert reader.buffered_size == 0


def test_text_reader_waits_for_the_separator() -> None:
    reader = TextRecordReader(None)
    reader.feed(b'{"a":')
    assert reader.next_record() is None
    assert reader.buffered_size == 5
    reader.feed(b"1}")
    assert reader.next_record() is None
    reader.feed(b"\x1e{")
    assert reader.next_record() == b'{"a":1}'
    assert reader.next_record() is None
    assert reader.buffered_size == 1


def test_text_reader_skips_empty_records() -> None:
    reader = TextRecordReader(None)
    reader.feed(b"\x1e\x1ea\x1e\x1e\x1eb\x1e\x1e")
    assert drain(reader) == [b"a", b"b"]
    assert reader.buffered_size == 0


def test_text_reader_accepts_bytearray_and_memoryview_without_aliasing() -> None:
    reader = TextRecordReader(None)
    chunk = bytearray(b"ab")
    reader.feed(chunk)
    chunk[:] = b"XX"  # the caller reuses its buffer; the reader must have copied it
    reader.feed(memoryview(b"c\x1e"))
    assert drain(reader) == [b"abc"]


def test_text_records_are_bytes() -> None:
    reader = TextRecordReader(None)
    reader.feed(b"ab")
    reader.feed(b"c\x1ed\x1e")
    records = drain(reader)
    assert records == [b"abc", b"d"]
    assert all(type(record) is bytes for record in records)


def test_text_record_split_at_every_offset() -> None:
    stream = b'{"type":1,"target":"x","arguments":[]}\x1e\x1e{"type":6}\x1e{"type":7}\x1e'
    expected = [b'{"type":1,"target":"x","arguments":[]}', b'{"type":6}', b'{"type":7}']
    for offset in range(len(stream) + 1):
        assert feed_all(TextRecordReader(1000), [stream[:offset], stream[offset:]]) == expected
    assert feed_all(TextRecordReader(1000), [bytes([b]) for b in stream]) == expected


def test_text_limit_counts_the_separator() -> None:
    reader = TextRecordReader(4)
    reader.feed(b"abc\x1e")  # 3 + 1 = 4 bytes: fits exactly
    assert reader.next_record() == b"abc"
    reader.feed(b"abcd\x1e")  # 5 bytes
    with pytest.raises(MessageTooLargeError) as info:
        reader.next_record()
    assert info.value.limit == 4
    assert str(info.value) == (
        "The maximum message size of 4B was exceeded. The message size can be configured in AddHubOptions."
    )


def test_text_limit_error_text_for_the_default_limit() -> None:
    reader = TextRecordReader(32768)
    reader.feed(b"x" * 32769)
    with pytest.raises(
        MessageTooLargeError,
        match=r"^The maximum message size of 32768B was exceeded\. "
        r"The message size can be configured in AddHubOptions\.$",
    ):
        reader.next_record()


def test_text_limit_raises_while_the_record_is_still_incomplete() -> None:
    reader = TextRecordReader(10)
    reader.feed(b"x" * 10)
    assert reader.next_record() is None  # 10 bytes buffered: could still be a 9-byte record + separator
    reader.feed(b"x")
    with pytest.raises(MessageTooLargeError):
        reader.next_record()


def test_text_limit_applies_per_record_not_per_feed() -> None:
    reader = TextRecordReader(4)
    reader.feed(b"abc\x1e" * 50)
    assert drain(reader) == [b"abc"] * 50


def test_text_limit_is_checked_after_earlier_records_are_returned() -> None:
    reader = TextRecordReader(4)
    reader.feed(b"ab\x1e" + b"x" * 10)
    assert reader.next_record() == b"ab"
    with pytest.raises(MessageTooLargeError):
        reader.next_record()


def test_text_reader_scans_each_byte_once_for_trickling_records() -> None:
    # A 200 KB record arriving in 1-byte feeds must not rescan the buffer on every feed (quadratic time).
    reader = TextRecordReader(None)
    for _ in range(200_000):
        reader.feed(b"x")
        assert reader.next_record() is None
    reader.feed(b"\x1e")
    assert reader.next_record() == b"x" * 200_000


def test_limit_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        TextRecordReader(0)
    with pytest.raises(ValueError, match="positive"):
        BinaryRecordReader(-1)


# --- VarInt and binary records -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (11, b"\x0b"),
        (0x35, b"\x35"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (5248, b"\x80\x29"),  # HubProtocol.md: "0x80 0x29 ... i.e. 0x1480 (5248)"
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2**31 - 1, b"\xff\xff\xff\xff\x07"),  # HubProtocol.md: "0xFF 0xFF 0xFF 0xFF 0x07"
    ],
)
def test_varint_examples(value: int, encoded: bytes) -> None:
    assert write_varint(value) == encoded
    reader = BinaryRecordReader(None)
    reader.feed(encoded + b"\x00" * min(value, 10))
    if value <= 10:
        assert reader.next_record() == b"\x00" * value
    else:
        assert reader.next_record() is None  # declared length not there yet


@pytest.mark.parametrize("value", [-1, 2**31, 2**40])
def test_write_varint_rejects_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match=r"VarInt|2GB"):
        write_varint(value)


def test_hub_protocol_md_binary_framing_example() -> None:
    stream = b"\x0bHello\nWorld\x02\x01\x02"
    assert write_binary_record(b"Hello\nWorld") + write_binary_record(b"\x01\x02") == stream
    reader = BinaryRecordReader(None)
    reader.feed(stream)
    assert drain(reader) == [b"Hello\nWorld", b"\x01\x02"]


def test_binary_zero_length_record() -> None:
    reader = BinaryRecordReader(None)
    reader.feed(b"\x00\x01A")
    assert drain(reader) == [b"", b"A"]


def test_binary_incomplete_prefix_waits() -> None:
    reader = BinaryRecordReader(None)
    reader.feed(b"\x80")
    assert reader.next_record() is None
    reader.feed(b"\x01")
    assert reader.next_record() is None  # 128 bytes declared
    reader.feed(b"z" * 128)
    assert reader.next_record() == b"z" * 128


@pytest.mark.parametrize(
    "prefix", [b"\xff\xff\xff\xff\x08", b"\xff\xff\xff\xff\xff", b"\x80\x80\x80\x80\x80\x01"]
)
def test_binary_prefix_over_2gb_is_invalid(prefix: bytes) -> None:
    reader = BinaryRecordReader(None)
    reader.feed(prefix)
    with pytest.raises(InvalidMessageError, match="2GB"):
        reader.next_record()


def test_binary_non_minimal_prefix_is_accepted() -> None:
    # .NET's BinaryMessageParser accepts redundant continuation bytes; so do we.
    reader = BinaryRecordReader(None)
    reader.feed(b"\x81\x00A")
    assert reader.next_record() == b"A"


def test_binary_record_split_at_every_offset() -> None:
    stream = write_binary_record(b"a" * 200) + write_binary_record(b"") + write_binary_record(b"\x91\x06")
    expected = [b"a" * 200, b"", b"\x91\x06"]
    for offset in range(len(stream) + 1):
        assert feed_all(BinaryRecordReader(1000), [stream[:offset], stream[offset:]]) == expected
    assert feed_all(BinaryRecordReader(1000), [bytes([b]) for b in stream]) == expected


def test_binary_limit_counts_prefix_and_payload() -> None:
    reader = BinaryRecordReader(4)
    reader.feed(b"\x03abc")  # 1 + 3 = 4 bytes
    assert reader.next_record() == b"abc"
    reader.feed(b"\x04")  # declares 1 + 4 = 5 bytes: rejected before the payload arrives
    with pytest.raises(MessageTooLargeError) as info:
        reader.next_record()
    assert info.value.limit == 4


def test_binary_huge_declared_length_fails_at_once() -> None:
    reader = BinaryRecordReader(32768)
    reader.feed(b"\xff\xff\xff\xff\x07")
    with pytest.raises(MessageTooLargeError, match="32768B"):
        reader.next_record()


def test_binary_incomplete_prefix_longer_than_a_tiny_limit_fails() -> None:
    reader = BinaryRecordReader(2)
    reader.feed(b"\x80\x80")
    with pytest.raises(MessageTooLargeError):
        reader.next_record()


# --- properties ----------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2**31 - 1))
def test_varint_round_trip(value: int) -> None:
    encoded = write_varint(value)
    assert 1 <= len(encoded) <= 5
    assert all(byte & 0x80 for byte in encoded[:-1])
    assert not encoded[-1] & 0x80
    # Decode through the reader: the declared length is what it waits for.
    reader = BinaryRecordReader(None)
    reader.feed(encoded)
    if value == 0:
        assert reader.next_record() == b""
    else:
        assert reader.next_record() is None
        assert reader.buffered_size == len(encoded)
    decoded = sum((byte & 0x7F) << (7 * i) for i, byte in enumerate(encoded))
    assert decoded == value


record_payloads = st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\x1e", b"")), max_size=8)
cuts = st.lists(st.integers(min_value=0, max_value=3000), max_size=12)


@settings(max_examples=150, deadline=None)
@given(record_payloads, cuts)
def test_text_any_chunking_gives_the_same_records(payloads: list[bytes], cut_points: list[int]) -> None:
    stream = b"".join(write_text_record(payload) for payload in payloads)
    expected = [payload for payload in payloads if payload]
    assert feed_all(TextRecordReader(None), split_at(stream, cut_points)) == expected


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), cuts)
def test_binary_any_chunking_gives_the_same_records(payloads: list[bytes], cut_points: list[int]) -> None:
    stream = b"".join(write_binary_record(payload) for payload in payloads)
    assert feed_all(BinaryRecordReader(None), split_at(stream, cut_points)) == payloads


def _limited_feed(reader: Reader, chunks: list[bytes], limit: int) -> tuple[list[bytes], bool]:
    """Feed chunk by chunk, checking the memory bound; return the records and whether the limit tripped."""
    records: list[bytes] = []
    for chunk in chunks:
        reader.feed(chunk)
        assert reader.buffered_size <= limit + len(chunk)
        try:
            while (record := reader.next_record()) is not None:
                records.append(record)
        except MessageTooLargeError as exc:
            limit_reported = exc.limit
        else:
            assert reader.buffered_size <= limit
            continue
        assert limit_reported == limit
        return records, True
    return records, False


@settings(max_examples=200, deadline=None)
@given(record_payloads, st.integers(min_value=1, max_value=200), cuts)
def test_text_limit_property(payloads: list[bytes], limit: int, cut_points: list[int]) -> None:
    stream = b"".join(write_text_record(payload) for payload in payloads)
    records, tripped = _limited_feed(TextRecordReader(limit), split_at(stream, cut_points), limit)
    # Every record up to the first oversized one (payload + separator > limit) comes out, then the error.
    expected: list[bytes] = []
    oversized = False
    for payload in payloads:
        if len(payload) + 1 > limit:
            oversized = True
            break
        if payload:
            expected.append(payload)
    assert records == expected
    assert tripped is oversized


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8), st.integers(min_value=1, max_value=200), cuts)
def test_binary_limit_property(payloads: list[bytes], limit: int, cut_points: list[int]) -> None:
    stream = b"".join(write_binary_record(payload) for payload in payloads)
    records, tripped = _limited_feed(BinaryRecordReader(limit), split_at(stream, cut_points), limit)
    expected: list[bytes] = []
    oversized = False
    for payload in payloads:
        if len(write_binary_record(payload)) > limit:
            oversized = True
            break
        expected.append(payload)
    assert records == expected
    assert tripped is oversized


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.none() | st.integers(min_value=1, max_value=64), cuts)
def test_arbitrary_bytes_only_raise_protocol_errors(
    data: bytes, limit: int | None, cut_points: list[int]
) -> None:
    """Whatever the bytes, a reader raises only its two errors; when it does not, it agrees with a model."""
    models = ((TextRecordReader(limit), _text_model), (BinaryRecordReader(limit), _binary_model))
    for reader, model in models:
        try:
            records = feed_all(reader, split_at(data, cut_points))
        except (InvalidMessageError, MessageTooLargeError):
            continue
        expected, rest = model(data)
        assert records == expected
        assert reader.buffered_size == rest


def _text_model(data: bytes) -> tuple[list[bytes], int]:
    """The non-empty records before the last separator, and how many bytes follow it."""
    *complete, tail = data.split(RECORD_SEPARATOR)
    return [record for record in complete if record], len(tail)


def _binary_model(data: bytes) -> tuple[list[bytes], int]:
    """The records that VarInt length prefixes delimit completely, and how many bytes are left over."""
    records: list[bytes] = []
    position = 0
    while True:
        length = shift = 0
        index = position
        while True:
            if index == len(data):
                return records, len(data) - position
            byte = data[index]
            index += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if index + length > len(data):
            return records, len(data) - position
        records.append(data[index : index + length])
        position = index + length
