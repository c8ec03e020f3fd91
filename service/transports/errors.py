"""The HTTP refusals of the hub endpoint, one exception per refusal, answered in one place.

The endpoint raises; its two handlers turn the exception into the response (``refusal.response()``;
``refusal_middleware`` does the same for an app that mounts endpoint methods some other way).
Statuses and body texts are the ones ASP.NET Core's ``HttpConnectionDispatcher.cs`` sends, because
clients show them to people and some match on them (TransportProtocols.md,
https://github.com/dotnet/aspnetcore/tree/main/src/SignalR/docs/specs). Bodies are ``text/plain``;
the 401 has an empty body and says why in its ``WWW-Authenticate`` challenge (RFC 6750 §3).

Negotiate's ``{"error": ...}`` replies are not here: they are 200 responses of the protocol itself.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import ClassVar

from aiohttp import hdrs, web

__all__ = [
    "AtCapacityError",
    "ConnectionIdRequiredError",
    "ConnectionNotFoundError",
    "ConnectionOfAnotherUserError",
    "DeleteNotSupportedError",
    "EarlyInputTooLargeError",
    "HubHttpError",
    "MethodNotAllowedError",
    "OriginNotAllowedError",
    "PostToWebSocketError",
    "ResumeLossyError",
    "ShuttingDownError",
    "TooManyConnectionsError",
    "TooManyNewConnectionsError",
    "TransportChangeError",
    "TransportConflictError",
    "TransportNotSupportedError",
    "UnauthorizedError",
    "refusal_middleware",
]


class HubHttpError(Exception):
    """A hub request refused with ``status`` and the plain-text body ``text``."""

    status: ClassVar[int]
    text: ClassVar[str]

    def __init__(self) -> None:
        super().__init__(f"{self.status} {self.body_text}")

    @property
    def body_text(self) -> str:
        return self.text

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.body_text, content_type="text/plain")


class ConnectionIdRequiredError(HubHttpError):
    """A transport request without ``id`` (only a WebSocket may skip negotiation)."""

    status = 400
    text = "Connection ID required"


class TransportChangeError(HubHttpError):
    """A request for a connection with another transport than the one it started with."""

    status = 400
    text = "Cannot change transports mid-connection"


class DeleteNotSupportedError(HubHttpError):
    """DELETE ends only long-polling connections."""

    status = 400
    text = "Cannot terminate this connection using the DELETE endpoint."


class UnauthorizedError(HubHttpError):
    """No acceptable bearer token: an empty body and the ``WWW-Authenticate`` challenge.

    The body stays empty on purpose: the JS client's error then reads "Unauthorized: Status code '401'".
    """

    status = 401
    text = ""

    def __init__(self, challenge: str) -> None:
        super().__init__()
        self.challenge = challenge

    def response(self) -> web.Response:
        return web.Response(status=self.status, headers={hdrs.WWW_AUTHENTICATE: self.challenge})


class OriginNotAllowedError(HubHttpError):
    """A browser origin not in ``CORS_ORIGINS`` (stops cross-site WebSocket hijacking)."""

    status = 403
    text = "Origin not allowed"


class ConnectionOfAnotherUserError(HubHttpError):
    """The connection was negotiated by another user (its token may have leaked)."""

    status = 403
    text = "This connection belongs to another user."


class ConnectionNotFoundError(HubHttpError):
    """No live connection has that token (never negotiated, closed, or negotiated on another instance)."""

    status = 404
    text = "No Connection with that ID"


class ResumeLossyError(HubHttpError):
    """A stateful reconnect after the replay buffer dropped messages the client had not acked.

    Refused before the upgrade, like an unknown connection, so that the client's stateful-reconnect
    attempt fails and it starts a new connection (its automatic reconnect): accepted and then closed,
    the official JS client's reconnect and its automatic reconnect raced and it could end up with no
    connection at all."""

    status = 404
    text = "Messages were dropped while the connection was away; start a new connection."


class TransportNotSupportedError(HubHttpError):
    """A transport this service does not offer (``HUB_TRANSPORTS``)."""

    status = 404
    text = "{transport} transport not supported by this end point type"

    def __init__(self, transport: str) -> None:
        self.transport = transport
        super().__init__()

    @property
    def body_text(self) -> str:
        return self.text.format(transport=self.transport)


class MethodNotAllowedError(HubHttpError):
    """An HTTP method the route does not serve."""

    status = 405
    text = "Method Not Allowed"


class PostToWebSocketError(HubHttpError):
    """A POST for a WebSocket connection, whose client sends over the socket."""

    status = 405
    text = "POST requests are not allowed for WebSocket connections."


class TransportConflictError(HubHttpError):
    """A second stream or socket for a connection whose transport is still active."""

    status = 409
    text = "Connection already has an active transport."


class EarlyInputTooLargeError(HubHttpError):
    """More bytes POSTed before the first poll or stream than a transport frame may hold."""

    status = 413
    text = "Too much data before a transport was started."


class TooManyConnectionsError(HubHttpError):
    """``HUB_MAX_CONNECTIONS_PER_USER`` connections of this user (the token's subject) exist already.

    No ``Retry-After``: a slot frees when one of the user's connections ends, which nobody can predict.
    """

    status = 429
    text = "This user already has the most connections allowed ({limit}); close one before opening another."

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__()

    @property
    def body_text(self) -> str:
        return self.text.format(limit=self.limit)


class TooManyNewConnectionsError(HubHttpError):
    """More new connections of this user than ``HUB_MAX_NEGOTIATES_PER_USER_PER_MINUTE`` allows (at
    most ``HUB_NEGOTIATE_BURST`` at once): a reconnect storm. ``Retry-After`` says when the next one
    will be accepted (RFC 6585 §4)."""

    status = 429
    text = (
        "This user opened connections faster than allowed ({burst} at once, then {limit} a minute); "
        "retry after {retry_after} s."
    )

    def __init__(self, limit: int, burst: int, retry_after: int) -> None:
        self.limit = limit
        self.burst = burst
        self.retry_after = retry_after
        super().__init__()

    @property
    def body_text(self) -> str:
        return self.text.format(limit=self.limit, burst=self.burst, retry_after=self.retry_after)

    def response(self) -> web.Response:
        response = super().response()
        response.headers[hdrs.RETRY_AFTER] = str(self.retry_after)
        return response


class AtCapacityError(HubHttpError):
    """``HUB_MAX_CONNECTIONS`` connections exist already."""

    status = 503
    text = "The server has reached its connection limit; try again later."


class ShuttingDownError(HubHttpError):
    """The instance got SIGTERM: it only hands its existing clients their Close now (the client's
    retry, or its balancer, finds another instance)."""

    status = 503
    text = "The server is shutting down; connect again to reach another instance."


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def refusal_middleware(request: web.Request, handler: _Handler) -> web.StreamResponse:
    """The one place where a ``HubHttpError`` becomes its response."""
    try:
        return await handler(request)
    except HubHttpError as refusal:
        return refusal.response()
