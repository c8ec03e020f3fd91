"""The one message reader both hub protocols share: a record framer feeding a record parser.

Rule: framing (where a record ends) and decoding (what a record means) stay separate. This class only
pumps complete records from the framer into the protocol's parse function and skips records the parser
returns None for (unknown message types). It adds no buffering of its own.
"""

from __future__ import annotations

from collections.abc import Callable

from service.protocol.framing import ByteChunk, RecordReader
from service.protocol.messages import HubMessage

__all__ = ["FramedMessageReader"]


class FramedMessageReader:
    """Incremental hub-message reader: `feed` bytes, then call `next_message` until it returns None."""

    __slots__ = ("_parse", "_records")

    def __init__(self, records: RecordReader, parse: Callable[[bytes], HubMessage | None]) -> None:
        self._records = records
        self._parse = parse

    @property
    def buffered_size(self) -> int:
        """Bytes received but not yet turned into messages (an incomplete record, or unread records)."""
        return self._records.buffered_size

    def feed(self, data: ByteChunk) -> None:
        """Append bytes received from the transport; frame boundaries are irrelevant."""
        self._records.feed(data)

    def next_message(self) -> HubMessage | None:
        """The next complete message, or None when more bytes are needed.

        Raises a `ProtocolError` subclass for malformed or oversized input; the connection should then close.
        """
        records = self._records
        parse = self._parse
        while (record := records.next_record()) is not None:
            message = parse(record)
            # HubProtocol.md / JsonHubProtocol.cs: "Future protocol changes can add message types, old
            # clients can ignore them" -- the parser returns None for those and we move on.
            if message is not None:
                return message
        return None
