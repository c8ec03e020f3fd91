"""Authentication (Cognito JWT bearer tokens → ``Principal``) and group authorization.

Rule: this package knows tokens, keys and claims, nothing of HTTP servers, transports or the hub. It
may use aiohttp's *client* to fetch the JWKS; it never imports ``aiohttp.web``.
"""

from __future__ import annotations

from service.auth.dev import DevIssuer, DevKeyError, DevKeys
from service.auth.errors import (
    AuthenticationError,
    AuthFailureReason,
    AuthorizationError,
    JwksError,
    MissingTokenError,
)
from service.auth.jwks import JwksCache
from service.auth.policy import GroupPolicy, Roles
from service.auth.principal import Principal
from service.auth.setup import AuthComponents, build_auth
from service.auth.tickets import ConnectionTickets, is_ticket
from service.auth.tokens import ClaimNames, TokenValidator, extract_token, parse_header, www_authenticate

__all__ = [
    "AuthComponents",
    "AuthFailureReason",
    "AuthenticationError",
    "AuthorizationError",
    "ClaimNames",
    "ConnectionTickets",
    "DevIssuer",
    "DevKeyError",
    "DevKeys",
    "GroupPolicy",
    "JwksCache",
    "JwksError",
    "MissingTokenError",
    "Principal",
    "Roles",
    "TokenValidator",
    "build_auth",
    "extract_token",
    "is_ticket",
    "parse_header",
    "www_authenticate",
]
