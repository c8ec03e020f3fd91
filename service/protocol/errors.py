"""Exceptions raised when the remote peer breaks the SignalR protocol.

Rule: every error in this module means "the client sent something invalid" and derives from
`ProtocolError`, so a connection loop needs exactly one ``except ProtocolError`` to turn any bad input into
a Close message (or a handshake/negotiate error reply). Bugs on our own side (an argument that cannot be
serialized, an impossible message) are *not* protocol errors; they stay plain `TypeError`/`ValueError`.

Each error carries what the server should send back: `str(error)` is a message someone can act on, and
`dotnet_type_name` is the .NET exception name that ASP.NET appends to detailed errors
(``"Connection closed with an error. InvalidDataException: <message>"``).
"""

from __future__ import annotations

from typing import ClassVar

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

    # The .NET exception type ASP.NET would report for this failure when detailed errors are on.
    dotnet_type_name: ClassVar[str] = "InvalidDataException"

    @property
    def detailed_message(self) -> str:
        """``"<.NET type name>: <message>"``: what ASP.NET appends to errors when detailed errors are on."""
        return f"{self.dotnet_type_name}: {self}"


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
    """The handshake failed; `reply` is the text for the ``{"error": ...}`` handshake response.

    `detail` (optional) is the ``"<.NET type>: <message>"`` text ASP.NET appends to `reply` after a space
    when detailed errors are enabled; `detailed_reply` is that combination.
    """

    def __init__(self, reply: str, *, detail: str | None = None) -> None:
        super().__init__(reply if detail is None else f"{reply} {detail}")
        self.reply = reply
        self.detail = detail

    @property
    def detailed_reply(self) -> str:
        """`reply` with `detail` appended, for servers that run with detailed errors."""
        return self.reply if self.detail is None else f"{self.reply} {self.detail}"


class HandshakeCanceledError(HandshakeError):
    """No complete handshake record fitted into the maximum message size (or the handshake timed out)."""

    def __init__(self) -> None:
        # HubConnectionContext.HandshakeAsync: "Handshake was canceled." for both timeout and size limit.
        super().__init__("Handshake was canceled.")


class InvalidHandshakeError(HandshakeError):
    """The first record is not a valid handshake request (bad JSON, missing or mistyped properties)."""

    def __init__(self, problem: str) -> None:
        super().__init__(
            "An unexpected error occurred during connection handshake.",
            detail=f"InvalidDataException: {problem}",
        )
        self.problem = problem


class UnsupportedProtocolError(HandshakeError):
    """The handshake names a protocol, version or transfer format this server/transport cannot serve."""


class NegotiateError(ProtocolError):
    """The negotiate request is unacceptable; `str(error)` is the text for the ``{"error": ...}`` body."""
