"""Who is calling the hub's endpoints: the request's origin, and its bearer token or connection ticket.

The endpoint (``endpoint.py``) routes; this decides whether the caller may be routed at all, as
ASP.NET's authentication middleware and origin check do in front of ``HttpConnectionDispatcher``:
403 for an origin that is not allowed, 401 (with ``WWW-Authenticate``) for credentials that are not.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import structlog
from aiohttp import hdrs, web

from service.auth import (
    AuthenticationError,
    ConnectionTickets,
    Principal,
    TokenValidator,
    extract_token,
    is_ticket,
    www_authenticate,
)
from service.connections import ConnectionManager, HttpConnection
from service.metrics import AUTH_ACCEPTED, AUTH_FAILURES

from .errors import ConnectionNotFoundError, OriginNotAllowedError, UnauthorizedError

__all__ = ["RequestGuard", "query_value"]

log = structlog.get_logger(__name__)

_TOKEN_ACCEPTED = AUTH_ACCEPTED.labels("token")
_TICKET_ACCEPTED = AUTH_ACCEPTED.labels("ticket")


def query_value(request: web.Request, name: str) -> str | None:
    """Query values by case-insensitive key, as ASP.NET reads ``negotiateVersion`` and friends.

    Parsed from the query string on each call instead of ``request.query``: aiohttp caches that
    parsed multidict on the request, which a WebSocket keeps for its whole life (~0.5 KB each).
    """
    pairs = parse_qsl(request.query_string, keep_blank_values=True)
    for key, value in pairs:
        if key == name:
            return value
    lowered = name.lower()
    for key, value in pairs:
        if key.lower() == lowered:
            return value
    return None


class RequestGuard:
    """Checks every request of one hub path before the endpoint routes it."""

    def __init__(
        self,
        manager: ConnectionManager,
        validator: TokenValidator,
        *,
        allowed_origins: frozenset[str],
        tickets: ConnectionTickets | None = None,
    ) -> None:
        self._manager = manager
        self._validator = validator
        self._allowed_origins = allowed_origins
        self._tickets = tickets

    def origin_allowed(self, request: web.Request) -> bool:
        """Stop cross-site WebSocket hijacking: browsers send Origin, and CORS does not cover sockets."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None:
            return True  # not a browser (Node, .NET, Python clients)
        origin = origin.rstrip("/").lower()
        if origin in self._allowed_origins:
            return True
        host = request.host.lower()
        return origin in (f"http://{host}", f"https://{host}")  # same origin (the dev console)

    async def caller(self, request: web.Request, *, ticket_allowed: bool = True) -> Principal:
        """The caller, if its origin is allowed (else 403) and its token or connection ticket valid (else
        401). A ticket stands for the principal that negotiated its connection; it cannot negotiate."""
        if not self.origin_allowed(request):
            log.info("request.origin_refused", origin=request.headers.get(hdrs.ORIGIN), path=request.path)
            raise OriginNotAllowedError()
        try:
            token = extract_token(
                request.headers.get(hdrs.AUTHORIZATION), query_value(request, "access_token")
            )
            tickets = self._tickets
            if tickets is not None and is_ticket(token):
                principal = self._ticket_holder(
                    tickets, token, query_value(request, "id") if ticket_allowed else None
                )
                _TICKET_ACCEPTED.inc()
                return principal
            principal = await self._validator.validate(token)
            _TOKEN_ACCEPTED.inc()
            return principal
        except AuthenticationError as error:
            AUTH_FAILURES.labels(error.reason).inc()
            log.info("request.unauthorized", reason=error.reason, detail=error.description, path=request.path)
            raise UnauthorizedError(www_authenticate(error)) from None

    def ticket_for(self, connection: HttpConnection) -> str | None:
        """The ``accessToken`` negotiate hands out for ``connection`` (None: tickets are off)."""
        tickets = self._tickets
        if tickets is None:
            return None
        return tickets.issue(connection.connection_token, connection.principal.expires_at)

    def _ticket_holder(
        self, tickets: ConnectionTickets, ticket: str, connection_token: str | None
    ) -> Principal:
        """Whoever negotiated the connection ``ticket`` was issued for (404 when it is gone).

        An id this instance does not hold is a 404 before the ticket is checked: a ticket is good only
        on the instance that issued it, so the request belongs elsewhere, and a proxy retries a 404 on
        another instance but not a 401 (the clients a draining instance sends away come straight back
        to it, hashed by address, with the tickets the other instance gave them)."""
        connection = None if connection_token is None else self._holder(connection_token)
        tickets.verify(ticket, connection_token)
        assert connection is not None  # verify refuses a ticket without its connection's id
        return connection.principal

    def _holder(self, connection_token: str) -> HttpConnection:
        connection = self._manager.get(connection_token)
        if connection is None:
            draining = self._manager.get_draining(connection_token)
            if draining is None:
                raise ConnectionNotFoundError()
            connection = draining[0]
        return connection
