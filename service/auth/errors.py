"""Every exception the auth package raises, each saying whose fault it was and what to send back.

Rule: an exception's text is safe to show a client or write to a log. It never contains a token, a
token segment or a signature; at most it names a claim, an algorithm label or a time.

* ``AuthenticationError`` — the caller's credentials were missing or not acceptable. The transport
  answers 401 with ``WWW-Authenticate`` built from ``error`` and ``description`` (RFC 6750 §3), and
  counts ``reason``.
* ``AuthorizationError`` — a valid caller asked for something it may not have (group membership).
* ``JwksError`` — the signing keys could not be fetched or parsed: an operational/configuration
  problem on our side, never the caller's fault.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "AuthFailureReason",
    "AuthenticationError",
    "AuthorizationError",
    "JwksError",
    "MissingTokenError",
]

# Metric label for a rejected credential: a small closed set, so a dashboard can count by it.
AuthFailureReason = Literal[
    "missing",
    "malformed",
    "expired",
    "not_yet_valid",
    "bad_signature",
    "unknown_key",
    "bad_algorithm",
    "bad_issuer",
    "bad_audience",
    "bad_token_use",
    "jwks_unavailable",
    "invalid_claims",
    "bad_ticket",
]
_REASONS: frozenset[str] = frozenset(get_args(AuthFailureReason))

# RFC 6750 §3.1 error codes we use; "" means "send no error code" (no credentials at all).
_ERROR_CODES = frozenset({"", "invalid_request", "invalid_token"})


class AuthenticationError(Exception):
    """The request's bearer credentials are missing or unacceptable (answer 401).

    ``error`` is the RFC 6750 error code, ``description`` human text for ``error_description``,
    ``reason`` a metric label from :data:`AuthFailureReason`.
    """

    error: str
    description: str
    reason: AuthFailureReason

    def __init__(self, description: str, *, reason: AuthFailureReason, error: str = "invalid_token") -> None:
        # Both are programming errors on our side: a free-form reason would explode metric cardinality.
        if reason not in _REASONS:
            raise ValueError(f"unknown authentication failure reason {reason!r}")
        if error not in _ERROR_CODES:
            raise ValueError(f"{error!r} is not an RFC 6750 error code this service sends")
        super().__init__(description)
        self.error = error
        self.description = description
        self.reason = reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description!r}, reason={self.reason!r}, error={self.error!r})"


class MissingTokenError(AuthenticationError):
    """No bearer token at all: RFC 6750 §3.1 says to send no error code in this case."""

    def __init__(
        self,
        description: str = "A bearer token is required (Authorization header or access_token query)",
    ) -> None:
        super().__init__(description, reason="missing", error="")


class AuthorizationError(Exception):
    """An authenticated caller may not do what it asked; ``str()`` is safe to send to that caller."""


class JwksError(Exception):
    """The JWKS could not be fetched or contained no usable key (our problem, not the caller's)."""
