"""Connection tickets: a short credential, valid only for one connection's own requests.

Why: every request of a SignalR connection is authenticated, and the Cognito token a client presents
is 1-4 KiB. For a WebSocket, that token stays in memory as long as the socket is open. aiohttp keeps
the upgrade request as it was parsed, with the token in its headers twice, or in its URL for a
browser's ``access_token``. That is ~2 KB per connection, more than the hub's own state for it
(issue 12).

So negotiate, which does verify the Cognito token, answers with ``accessToken``: a ticket of ~40
characters. It authenticates only requests that carry that connection's ``id``, and only until the
token it was issued against expires.

The SignalR clients do the rest:
- The JS client (``HttpConnection._startInternal``) and the .NET client use a negotiate response's
  ``accessToken`` for every later request of that connection, with or without a redirect ``url``
  (TransportProtocols.md, "POST [endpoint-base]/negotiate request").
- On a restart they negotiate again with their own token.
- A client that ignores the ticket keeps sending its token, which is accepted as before.

Format: ``sct1.<exp>.<mac>``.
- ``exp``: whole seconds since the epoch, the token's ``exp`` rounded up.
- ``mac``: the first 16 bytes of HMAC-SHA256(key, ``"<id>.<exp>"``), base64url (RFC 2104 §5 allows
  truncating to half the hash's output).

The key is random per process: a connection lives in one process (its id means nothing elsewhere), so
its ticket does too, and there is no secret to configure or rotate.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable

from service.auth.errors import AuthenticationError, AuthFailureReason

__all__ = ["TICKET_PREFIX", "ConnectionTickets", "is_ticket"]

TICKET_PREFIX = "sct1."
_MAC_BYTES = 16
_MAX_TICKET_LENGTH = 64  # prefix, up to 20 digits of exp, a dot, 22 characters of MAC


def is_ticket(token: str) -> bool:
    """Whether ``token`` is a connection ticket (a JWT starts with ``eyJ``, never with the prefix)."""
    return token.startswith(TICKET_PREFIX)


def _refused(description: str, *, reason: AuthFailureReason = "bad_ticket") -> AuthenticationError:
    return AuthenticationError(description, reason=reason)


class ConnectionTickets:
    """Issues tickets at negotiate and checks them on the connection's later requests."""

    def __init__(
        self,
        *,
        key: bytes | None = None,
        leeway: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if key is not None and len(key) < 32:
            raise ValueError("a ticket key needs at least 32 bytes")
        if leeway < 0:
            raise ValueError("leeway must be >= 0 seconds")
        self._key = key if key is not None else secrets.token_bytes(32)
        self._leeway = leeway  # the same grace as the token's own exp check
        self._clock = clock

    def issue(self, connection_token: str, expires_at: float) -> str:
        """The ticket for the requests of the connection ``connection_token``, until ``expires_at``."""
        exp = math.ceil(expires_at)
        return f"{TICKET_PREFIX}{exp}.{self._mac(connection_token, exp)}"

    def verify(self, ticket: str, connection_token: str | None) -> float:
        """When the ticket expires, if it was issued here for ``connection_token`` and has not expired;
        ``AuthenticationError`` otherwise (the caller answers 401)."""
        if not connection_token:
            raise _refused(
                "A connection ticket is only valid for the requests of its connection (with its id);"
                " negotiate with your bearer token"
            )
        if len(ticket) > _MAX_TICKET_LENGTH or not is_ticket(ticket):
            raise _refused("The connection ticket is malformed", reason="malformed")
        exp_text, dot, mac = ticket[len(TICKET_PREFIX) :].partition(".")
        if not dot or not exp_text.isdigit() or not exp_text.isascii():
            raise _refused("The connection ticket is malformed", reason="malformed")
        exp = int(exp_text)
        if not hmac.compare_digest(mac.encode("ascii", "replace"), self._mac(connection_token, exp).encode()):
            raise _refused(
                "The connection ticket is not valid for this connection on this instance;"
                " negotiate again with your bearer token"
            )
        if self._clock() > exp + self._leeway:
            raise _refused("The connection ticket has expired; negotiate again", reason="expired")
        return float(exp)

    def _mac(self, connection_token: str, exp: int) -> str:
        message = f"{connection_token}.{exp}".encode("utf-8", "surrogateescape")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()[:_MAC_BYTES]
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
