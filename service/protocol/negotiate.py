"""The negotiate step (``POST {hub}/negotiate``): connection ids, version selection, the JSON response.

Rule: pure functions from query values to bytes, matching ASP.NET's HttpConnectionDispatcher and
NegotiateProtocol byte for byte in property order, because some clients validate the response strictly
(signalrcore rejects unknown transport names and empty transfer format lists; the JS client aborts on an
unrequested ``useStatefulReconnect``). The HTTP handler around it lives in the transports package.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from service.protocol.errors import NegotiateError
from service.protocol.messages import TransferFormat

__all__ = [
    "DEFAULT_TRANSPORTS",
    "LONG_POLLING",
    "MAX_NEGOTIATE_VERSION",
    "SERVER_SENT_EVENTS",
    "TRANSFER_FORMATS",
    "WEBSOCKETS",
    "AvailableTransport",
    "negotiate_error_response",
    "negotiate_response",
    "new_connection_id",
    "parse_bool_query",
    "parse_negotiate_version",
]

# HttpConnectionDispatcher.cs: the newest negotiate protocol version (1: separate connectionToken).
MAX_NEGOTIATE_VERSION: Final = 1

_BOTH: Final = (TransferFormat.TEXT, TransferFormat.BINARY)
# TransportProtocols.md: "the Server-Sent Events transport [...] only supports text"; WebSockets and
# Long Polling carry both. The one table of which formats each transport carries: negotiate lists it,
# and the hub refuses a handshake whose protocol the connection's transport cannot carry.
TRANSFER_FORMATS: Final[Mapping[str, tuple[TransferFormat, ...]]] = {
    "WebSockets": _BOTH,
    "ServerSentEvents": (TransferFormat.TEXT,),
    "LongPolling": _BOTH,
}
_TRANSPORT_NAMES: Final = frozenset(TRANSFER_FORMATS)
_TRANSFER_FORMAT_NAMES: Final = frozenset({"Text", "Binary"})

# .NET int.TryParse with NumberStyles.Integer: optional surrounding white space, an optional sign, ASCII
# digits. Python's int() would also take "1_0" and non-ASCII digits, which .NET rejects.
_DOTNET_INTEGER: Final = re.compile(r"[\t\n\v\f\r ]*([+-]?[0-9]+)[\t\n\v\f\r ]*", re.ASCII)
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1


def new_connection_id() -> str:
    """A fresh connection id or token: 16 random bytes, base64url without padding (22 URL-safe chars).

    HttpConnectionManager.MakeNewConnectionId does the same; the JS client appends the token to URLs
    without encoding it, so it must be URL-safe.
    """
    return secrets.token_urlsafe(16)


def parse_negotiate_version(raw: str | None, *, minimum_version: int = 0) -> int:
    """The negotiate version to answer with, from the raw ``negotiateVersion`` query value.

    Absent means 0 (pysignalr and signalrcore send none). `minimum_version` is ASP.NET's
    MinimumProtocolVersion (default 0: keep it there, or those clients cannot connect). Raises
    NegotiateError with ASP.NET's text for a non-integer or too-low version; versions above the server's
    maximum are clamped to it.
    """
    if raw is None:
        version = 0
    else:
        match = _DOTNET_INTEGER.fullmatch(raw)
        if match is None or not _INT32_MIN <= (version := int(match.group(1))) <= _INT32_MAX:
            raise NegotiateError("The client requested a non-integer protocol version.")
    if version < minimum_version:
        raise NegotiateError(
            f"The client requested version '{version}', but the server does not support this version."
        )
    return min(version, MAX_NEGOTIATE_VERSION)


def parse_bool_query(raw: str | None) -> bool:
    """True only for ``true`` in any letter case (white space around allowed), like .NET bool.TryParse."""
    return raw is not None and raw.strip().lower() == "true"


@dataclass(frozen=True, slots=True)
class AvailableTransport:
    """One entry of ``availableTransports``: a transport name and the transfer formats it carries."""

    name: str
    transfer_formats: tuple[str, ...]

    def __post_init__(self) -> None:
        # signalrcore maps both into enums and raises on anything unknown or an empty format list.
        if self.name not in _TRANSPORT_NAMES:
            raise ValueError(
                f"Unknown transport name {self.name!r}; expected one of {sorted(_TRANSPORT_NAMES)}."
            )
        if not self.transfer_formats or not set(self.transfer_formats) <= _TRANSFER_FORMAT_NAMES:
            raise ValueError(
                f"Transfer formats of {self.name} must be a non-empty subset of "
                f"{sorted(_TRANSFER_FORMAT_NAMES)}, not {self.transfer_formats!r}."
            )

    @classmethod
    def named(cls, name: str) -> AvailableTransport:
        """The entry for transport ``name``, with the formats ``TRANSFER_FORMATS`` gives it."""
        formats = TRANSFER_FORMATS.get(name)
        if formats is None:
            raise ValueError(f"Unknown transport name {name!r}; expected one of {sorted(_TRANSPORT_NAMES)}.")
        return cls(name, tuple(transfer_format.wire_name for transfer_format in formats))


WEBSOCKETS: Final = AvailableTransport.named("WebSockets")
SERVER_SENT_EVENTS: Final = AvailableTransport.named("ServerSentEvents")
LONG_POLLING: Final = AvailableTransport.named("LongPolling")
# TransportProtocols.md / HttpConnectionDispatcher: listed in preference order WebSockets, SSE, LongPolling.
DEFAULT_TRANSPORTS: Final = (WEBSOCKETS, SERVER_SENT_EVENTS, LONG_POLLING)


def negotiate_response(
    *,
    connection_id: str,
    connection_token: str | None,
    negotiate_version: int,
    transports: Sequence[AvailableTransport],
    use_stateful_reconnect: bool,
    access_token: str | None = None,
) -> bytes:
    """The negotiate response body, in NegotiateProtocol.WriteResponse's property order.

    ``useStatefulReconnect`` only when true (the JS client aborts on an unrequested one), ``negotiateVersion``
    always (also 0), ``connectionToken`` only for version > 0 (version 0 clients use the connection id).
    ``accessToken``, when given, is what the clients send on the connection's later requests instead of
    their own token (the JS and .NET clients take it with or without a redirect ``url``).
    """
    body: dict[str, Any] = {}
    if use_stateful_reconnect:
        body["useStatefulReconnect"] = True
    body["negotiateVersion"] = negotiate_version
    body["connectionId"] = connection_id
    if negotiate_version > 0:
        if not connection_token:
            raise ValueError("Negotiate version 1 and later need a connection token.")
        body["connectionToken"] = connection_token
    body["availableTransports"] = [
        {"transport": transport.name, "transferFormats": transport.transfer_formats}
        for transport in transports
    ]
    if access_token is not None:
        body["accessToken"] = access_token
    return orjson.dumps(body)


def negotiate_error_response(message: str) -> bytes:
    """``{"error":"<message>"}``: ASP.NET sends negotiate errors with HTTP 200 and this body."""
    return orjson.dumps({"error": message})
