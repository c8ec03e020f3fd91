"""The SignalR hub messages as typed values: one frozen, slotted dataclass per message of HubProtocol.md.

Rule: this module only *describes* messages. It knows no encoding (JSON or MessagePack live in their own
modules) and does no I/O. Field names are the spec's names in snake_case; numeric message types are the
spec's numbers. Messages are immutable so one encoded broadcast can be shared by thousands of connections.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias

__all__ = [
    "EMPTY_HEADERS",
    "PING",
    "AckMessage",
    "CancelInvocationMessage",
    "CloseMessage",
    "CompletionMessage",
    "HandshakeRequest",
    "HubInvocationMessage",
    "HubMessage",
    "InvocationMessage",
    "MessageType",
    "PingMessage",
    "SequenceMessage",
    "StreamInvocationMessage",
    "StreamItemMessage",
    "TransferFormat",
    "is_trackable",
]


class MessageType(IntEnum):
    """The ``type`` number of each hub message (HubProtocol.md, message type table)."""

    INVOCATION = 1
    STREAM_ITEM = 2
    COMPLETION = 3
    STREAM_INVOCATION = 4
    CANCEL_INVOCATION = 5
    PING = 6
    CLOSE = 7
    ACK = 8
    SEQUENCE = 9


class TransferFormat(IntEnum):
    """What a hub protocol puts on the wire: text (JSON) or binary (MessagePack)."""

    TEXT = 1
    BINARY = 2

    @property
    def wire_name(self) -> str:
        """The name used in negotiate responses and handshake errors: ``"Text"`` or ``"Binary"``."""
        return "Text" if self is TransferFormat.TEXT else "Binary"


# HubProtocol.md: "Headers are transmitted as a dictionary with string keys and string values."
# One shared, read-only empty mapping: almost every message has no headers, so none allocates a dict.
EMPTY_HEADERS: Mapping[str, str] = MappingProxyType({})


def _no_headers() -> Mapping[str, str]:
    return EMPTY_HEADERS


@dataclass(frozen=True, slots=True)
class InvocationMessage:
    """Type 1: call `target` with `arguments`; no `invocation_id` means non-blocking (no reply at all)."""

    message_type: ClassVar[MessageType] = MessageType.INVOCATION

    target: str
    arguments: tuple[Any, ...]
    invocation_id: str | None = None
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    stream_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamInvocationMessage:
    """Type 4: call streaming method `target`; the callee answers with StreamItems, then a Completion."""

    message_type: ClassVar[MessageType] = MessageType.STREAM_INVOCATION

    invocation_id: str
    target: str
    arguments: tuple[Any, ...]
    headers: Mapping[str, str] = field(default_factory=_no_headers)
    stream_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamItemMessage:
    """Type 2: one item of a stream (server stream result, or client upload stream keyed by stream id)."""

    message_type: ClassVar[MessageType] = MessageType.STREAM_ITEM

    invocation_id: str
    item: Any
    headers: Mapping[str, str] = field(default_factory=_no_headers)


@dataclass(frozen=True, slots=True)
class CompletionMessage:
    """Type 3: end of an invocation or stream, carrying `error`, or `result` (when `has_result`), or neither.

    `has_result` distinguishes "returned None" (``"result": null`` on the wire) from a void method (no
    ``result`` at all). Build instances with `with_result`, `with_error` or `void`.
    """

    message_type: ClassVar[MessageType] = MessageType.COMPLETION

    invocation_id: str
    error: str | None = None
    result: Any = None
    has_result: bool = False
    headers: Mapping[str, str] = field(default_factory=_no_headers)

    def __post_init__(self) -> None:
        # HubProtocol.md: "It is a protocol error to include both a `result` and an `error` property".
        if self.error is not None and self.has_result:
            raise ValueError("A CompletionMessage cannot carry both an error and a result.")

    @classmethod
    def with_result(cls, invocation_id: str, result: Any) -> CompletionMessage:
        """A successful completion carrying `result` (which may be None: ``"result": null``)."""
        return cls(invocation_id, result=result, has_result=True)

    @classmethod
    def with_error(cls, invocation_id: str, error: str) -> CompletionMessage:
        """A failed completion carrying the `error` text."""
        return cls(invocation_id, error=error)

    @classmethod
    def void(cls, invocation_id: str) -> CompletionMessage:
        """A completion with neither result nor error (void methods, finished streams)."""
        return cls(invocation_id)


@dataclass(frozen=True, slots=True)
class CancelInvocationMessage:
    """Type 5: the caller asks the callee to stop the invocation or stream `invocation_id`."""

    message_type: ClassVar[MessageType] = MessageType.CANCEL_INVOCATION

    invocation_id: str
    headers: Mapping[str, str] = field(default_factory=_no_headers)


@dataclass(frozen=True, slots=True)
class PingMessage:
    """Type 6: keep-alive. HubProtocol.md: "Ping messages do not have any payload"."""

    message_type: ClassVar[MessageType] = MessageType.PING


@dataclass(frozen=True, slots=True)
class CloseMessage:
    """Type 7: the sender closes the connection, optionally with an `error` and a hint to reconnect."""

    message_type: ClassVar[MessageType] = MessageType.CLOSE

    error: str | None = None
    allow_reconnect: bool = False


@dataclass(frozen=True, slots=True)
class AckMessage:
    """Type 8 (stateful reconnect): every trackable message up to `sequence_id` was received."""

    message_type: ClassVar[MessageType] = MessageType.ACK

    sequence_id: int


@dataclass(frozen=True, slots=True)
class SequenceMessage:
    """Type 9 (stateful reconnect): the next trackable message the sender sends has id `sequence_id`."""

    message_type: ClassVar[MessageType] = MessageType.SEQUENCE

    sequence_id: int


PING = PingMessage()

HubMessage: TypeAlias = (
    InvocationMessage
    | StreamInvocationMessage
    | StreamItemMessage
    | CompletionMessage
    | CancelInvocationMessage
    | PingMessage
    | CloseMessage
    | AckMessage
    | SequenceMessage
)

# HubProtocol.md, "Trackable messages": "Only `HubInvocationMessage` types participate in sequence tracking".
HubInvocationMessage: TypeAlias = (
    InvocationMessage
    | StreamInvocationMessage
    | StreamItemMessage
    | CompletionMessage
    | CancelInvocationMessage
)
_TRACKABLE = (
    InvocationMessage,
    StreamInvocationMessage,
    StreamItemMessage,
    CompletionMessage,
    CancelInvocationMessage,
)


def is_trackable(message: HubMessage) -> bool:
    """True for the messages that stateful reconnect numbers, buffers and replays.

    HubProtocol.md: "`HandshakeRequest`, `HandshakeResponse`, `Ping`, `Close`, `Ack` and `Sequence` messages
    are **not** assigned a sequence ID and are not buffered for replay."
    """
    return isinstance(message, _TRACKABLE)


@dataclass(frozen=True, slots=True)
class HandshakeRequest:
    """The client's first record: which hub protocol (``"json"``, ``"messagepack"``) and which version."""

    protocol: str
    version: int
