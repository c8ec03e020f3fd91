"""Record framing: split an inbound byte stream into records, and frame outbound records.

Two framings exist (HubProtocol.md): text records terminated by the ASCII record separator 0x1E (JSON and
every handshake), and binary records prefixed by their VarInt length (MessagePack).

Rule: transport message boundaries mean nothing here. Readers are incremental (``feed`` bytes, then pull
``next_record()`` until it returns None for "need more data"), never copy more than needed, and enforce the
maximum record size with a sliding window exactly as ASP.NET's HubConnectionHandler does, so a client can
make the server buffer at most ``limit`` bytes plus one transport chunk. Readers know nothing about the
content of records; errors are `MessageTooLargeError` (too big) and `InvalidMessageError` (bad prefix).
"""

from __future__ import annotations

from typing import Protocol

from service.protocol.errors import InvalidMessageError, MessageTooLargeError

__all__ = [
    "MAX_VARINT_VALUE",
    "RECORD_SEPARATOR",
    "BinaryRecordReader",
    "RecordReader",
    "TextRecordReader",
    "write_binary_record",
    "write_text_record",
    "write_varint",
]

RECORD_SEPARATOR = b"\x1e"

# HubProtocol.md: "The biggest supported payloads are 2GB in size so the biggest number we need to support
# is 0x7fffffff which when encoded as VarInt is 0xFF 0xFF 0xFF 0xFF 0x07 - hence the maximum size of the
# length prefix is 5 bytes."
MAX_VARINT_VALUE = 0x7FFF_FFFF
_MAX_VARINT_BYTES = 5

ByteChunk = bytes | bytearray | memoryview

# Single-byte VarInts (lengths 0..127) cover most records; build them once.
_SMALL_VARINTS = tuple(bytes((n,)) for n in range(0x80))


class RecordReader(Protocol):
    """What both framings offer: feed bytes in, take complete record payloads out."""

    @property
    def buffered_size(self) -> int: ...

    def feed(self, data: ByteChunk) -> None: ...

    def next_record(self) -> bytes | None: ...


def _check_limit(max_record_size: int | None) -> int | None:
    if max_record_size is not None and max_record_size < 1:
        raise ValueError(f"max_record_size must be a positive number of bytes or None, not {max_record_size}")
    return max_record_size


class _Buffer:
    """Unconsumed input: ``data[pos:]``.

    While a whole chunk is being consumed record by record, ``data`` is the caller's own ``bytes`` object
    (no copy at all). Only when a record spans feeds do the leftovers move into a ``bytearray``.
    """

    __slots__ = ("data", "pos")

    def __init__(self) -> None:
        self.data: bytes | bytearray = b""
        self.pos = 0

    @property
    def size(self) -> int:
        return len(self.data) - self.pos

    def append(self, chunk: ByteChunk) -> int:
        """Add `chunk`; return how many bytes from the front were dropped (already consumed)."""
        data = self.data
        dropped = self.pos
        if dropped == len(data):
            # Common case: everything before was consumed; keep the caller's bytes (bytes(b) is b).
            self.data = bytes(chunk)
        else:
            if isinstance(data, bytes):
                data = bytearray(memoryview(data)[dropped:])
            elif dropped:
                del data[:dropped]
            data += chunk
            self.data = data
        self.pos = 0
        return dropped

    def take(self, start: int, end: int, new_pos: int) -> bytes:
        """Return ``data[start:end]`` as bytes and consume up to `new_pos`."""
        data = self.data
        record = data[start:end] if isinstance(data, bytes) else bytes(memoryview(data)[start:end])
        if new_pos == len(data):
            # Drop the reference at once so a large consumed chunk is not kept alive while idle.
            self.data = b""
            self.pos = 0
        else:
            self.pos = new_pos
        return record


class TextRecordReader:
    """Splits a byte stream into records terminated by 0x1E; returns payloads without the separator."""

    __slots__ = ("_buffer", "_limit", "_scanned")

    def __init__(self, max_record_size: int | None) -> None:
        self._limit = _check_limit(max_record_size)
        self._buffer = _Buffer()
        # Absolute index in the buffer up to which no separator exists. Rescanning only the new bytes keeps
        # a record that trickles in byte by byte linear instead of quadratic.
        self._scanned = 0

    @property
    def buffered_size(self) -> int:
        """Bytes received but not yet returned as records."""
        return self._buffer.size

    def feed(self, data: ByteChunk) -> None:
        """Append received bytes. Never raises; problems surface from `next_record`."""
        if data:
            self._scanned = max(self._scanned - self._buffer.append(data), 0)

    def next_record(self) -> bytes | None:
        """The next complete record's payload, or None if more data is needed.

        Raises MessageTooLargeError when a record (counting its separator) cannot fit into the limit.
        """
        buf = self._buffer
        limit = self._limit
        while True:
            data = buf.data
            pos = buf.pos
            start = max(self._scanned, pos)
            if limit is None:
                index = data.find(RECORD_SEPARATOR, start)
            else:
                # HubConnectionHandler.cs gives the parser a sliding window of MaximumReceiveMessageSize
                # bytes: the separator must lie within the first `limit` bytes of the record.
                index = data.find(RECORD_SEPARATOR, start, pos + limit)
            if index < 0:
                end = len(data)
                if limit is not None and end - pos > limit:
                    # HubConnectionHandler.cs: an incomplete record longer than the window is already too
                    # large; fail now instead of buffering an endless record.
                    raise MessageTooLargeError(limit)
                self._scanned = end
                return None
            self._scanned = index + 1
            if index == pos:
                # An empty record (two separators in a row). .NET would fail to parse "" as JSON; skipping
                # it is harmless and more forgiving.
                buf.pos = index + 1
                continue
            record = buf.take(pos, index, index + 1)
            if buf.pos == 0:
                self._scanned = 0
            return record


def write_text_record(payload: bytes) -> bytes:
    """Frame one text record: the payload followed by the record separator."""
    # HubProtocol.md: "All JSON messages must be terminated by the ASCII character `0x1E` (record separator)."
    return payload + RECORD_SEPARATOR


class BinaryRecordReader:
    """Splits a byte stream into VarInt-length-prefixed records; returns payloads without the prefix."""

    __slots__ = ("_buffer", "_limit")

    def __init__(self, max_record_size: int | None) -> None:
        self._limit = _check_limit(max_record_size)
        self._buffer = _Buffer()

    @property
    def buffered_size(self) -> int:
        """Bytes received but not yet returned as records."""
        return self._buffer.size

    def feed(self, data: ByteChunk) -> None:
        """Append received bytes. Never raises; problems surface from `next_record`."""
        if data:
            self._buffer.append(data)

    def next_record(self) -> bytes | None:
        """The next complete record's payload, or None if more data is needed.

        Raises InvalidMessageError for a length prefix over 2 GB and MessageTooLargeError as soon as the
        declared length (plus prefix) exceeds the limit, without waiting for the payload.
        """
        buf = self._buffer
        data = buf.data
        pos = buf.pos
        end = len(data)
        if pos == end:
            return None
        # HubProtocol.md: "VarInt encodes the most significant bit as a marker indicating whether the byte is
        # the last byte of the VarInt or if it spans to the next byte. Bytes appear in the reverse order".
        length = 0
        shift = 0
        index = pos
        while True:
            if index == end:
                # The prefix itself is incomplete. The record needs at least one more byte; if even that
                # cannot fit, fail now (keeps the buffer within the limit for tiny limits too).
                if self._limit is not None and index - pos + 1 > self._limit:
                    raise MessageTooLargeError(self._limit)
                return None
            byte = data[index]
            index += 1
            length |= (byte & 0x7F) << shift
            if index - pos == _MAX_VARINT_BYTES:
                # BinaryMessageParser.cs: the 5th byte ends the prefix and must be <= 7 (value < 2**31).
                if byte > 7:
                    raise InvalidMessageError("Messages over 2GB in size are not supported.")
                break
            if not byte & 0x80:
                break
            shift += 7
        total = index - pos + length
        if self._limit is not None and total > self._limit:
            # The size limit counts prefix and payload, as .NET's sliding window does.
            raise MessageTooLargeError(self._limit)
        if end - pos < total:
            return None
        return buf.take(index, index + length, pos + total)


def write_varint(n: int) -> bytes:
    """Encode a record length as a VarInt (1 to 5 bytes)."""
    if n < 0x80:
        if n < 0:
            raise ValueError(f"A VarInt length cannot be negative: {n}")
        return _SMALL_VARINTS[n]
    if n > MAX_VARINT_VALUE:
        raise ValueError(f"Records over 2GB cannot be framed (length {n} > {MAX_VARINT_VALUE}).")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def write_binary_record(payload: bytes) -> bytes:
    """Frame one binary record: VarInt length prefix followed by the payload."""
    return write_varint(len(payload)) + payload
