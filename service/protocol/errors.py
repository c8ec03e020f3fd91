"""Exceptions raised when the remote peer breaks the SignalR protocol.

Rule: every error in this module means "the client sent something invalid" and derives from
`ProtocolError`, so a connection loop needs exactly one ``except ProtocolError`` to turn any bad input into
a Close message (or a handshake/negotiate error reply). Bugs on our own side (an argument that cannot be
serialized, an impossible message) are *not* protocol errors; they stay plain `TypeError`/`ValueError`.

Each error carries what the server should send back: `str(error)` is a message someone can act on (a
handshake error's `reply` is the text of the ``{"error": ...}`` handshake response).
"""

from __future__ import annotations

__all__ = [
    "HandshakeCanceledError",
    "HandshakeError",
    "InvalidHandshakeError",
    "InvalidMessageError",
    "MessageTooLargeError",
    "NegotiateError",
    "ProtocolError",
    "UnsupportedProtocolError",
]


class ProtocolError(Exception):
    """The remote peer sent something invalid; the connection cannot continue on this input."""


class InvalidMessageError(ProtocolError):
    """A hub message record is malformed (the .NET ``InvalidDataException``)."""


class MessageTooLargeError(ProtocolError):
    """A record (including its separator or length prefix) exceeded the configured maximum size."""

    def __init__(self, limit: int) -> None:
        # HubConnectionHandler.cs (.NET): the exact text the server reports for an oversized message.
        super().__init__(
            f"The maximum message size of {limit}B was exceeded. "
            "The message size can be configured in AddHubOptions."
        )
        self.limit = limit


class HandshakeError(ProtocolError):
    """The handshake failed; `reply` is the text for the ``{"error": ...}`` handshake response."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class HandshakeCanceledError(HandshakeError):
    """No complete handshake record fitted into the maximum message size (or the handshake timed out)."""

    def __init__(self) -> None:
        # HubConnectionContext.HandshakeAsync: "Handshake was canceled." for both timeout and size limit.
        super().__init__("Handshake was canceled.")


class InvalidHandshakeError(HandshakeError):
    """The first record is not a valid handshake request (bad JSON, missing or mistyped properties).

    The client gets ASP.NET's generic reply; `problem` says what was wrong, for the server's side.
    """

    def __init__(self, problem: str) -> None:
        super().__init__("An unexpected error occurred during connection handshake.")
        self.problem = problem


class UnsupportedProtocolError(HandshakeError):
    """The handshake names a protocol, version or transfer format this server/transport cannot serve."""


class NegotiateError(ProtocolError):
    """The negotiate request is unacceptable; `str(error)` is the text for the ``{"error": ...}`` body."""
