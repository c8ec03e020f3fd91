"""Bearer token in, ``Principal`` out: the Cognito JWT rules, in the order they are checked.

Rules (RFC 7519, RFC 8725 "JSON Web Token Best Current Practices", Cognito's token verification guide,
aws-jwt-verify):

1. The header is parsed without being trusted: exactly three base64url segments, a JSON object header
   with no duplicate names. Anything else is ``malformed``.
2. ``alg`` must be exactly ``RS256`` (no ``none``, no HS*/RS384/PS*/ES*); a ``crit`` or ``b64`` header is
   refused (no extension is understood); ``kid`` is required. ``jku``/``x5u``/``jwk``/``x5c`` are
   ignored: keys only ever come from the configured JWKS.
3. The key is an ``RSAPublicKey`` from ``JwksCache``; PyJWT verifies with ``algorithms=["RS256"]``.
4. ``iss`` equals the configured issuer exactly (CVE-2024-53861 was a substring match).
5. ``exp`` is required; ``exp``/``nbf``/``iat`` are checked here against the injected clock, with leeway.
6. ``token_use`` is ``access`` (then ``client_id`` must equal the audience — access tokens have no
   ``aud``) or ``id`` (then ``aud`` must equal or contain it). ``sub`` is required.

Token text never reaches a log line or an exception message.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn

import jwt
from jwt import exceptions as jwt_errors

from schemas.groups import canonical_uuid
from service.auth.errors import AuthenticationError, AuthFailureReason, MissingTokenError
from service.auth.jwks import JwksCache
from service.auth.principal import Principal

__all__ = [
    "ALGORITHM",
    "MAX_TOKEN_LENGTH",
    "TOKEN_USES",
    "ClaimNames",
    "TokenValidator",
    "extract_token",
    "parse_header",
    "www_authenticate",
]

# RFC 8725 §3.1: one allowed algorithm, bound to the RSA keys of the JWKS.
ALGORITHM = "RS256"
TOKEN_USES: frozenset[str] = frozenset({"access", "id"})
# Cognito tokens are 1-4 KiB; aiohttp caps a header line at 8 KiB anyway. Refusing more up front keeps
# an attacker from making us base64-decode and parse megabytes before any check.
MAX_TOKEN_LENGTH = 16 * 1024
_MAX_KID_LENGTH = 256
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# Algorithm names are echoed in the error description only when they look like one.
_ALG_LABEL = re.compile(r"[A-Za-z0-9+_-]{1,32}")
# Header parameters that change how a JWS must be processed; we implement none of them.
_UNSUPPORTED_HEADERS = ("crit", "b64")


@dataclass(frozen=True)
class ClaimNames:
    """Which claims carry roles, regions and the contractor id (configurable per user pool)."""

    groups: str = "cognito:groups"
    region: str = "custom:region"
    contractor_id: str = "custom:contractorId"


_DEFAULT_CLAIM_NAMES = ClaimNames()


def _malformed(description: str, *, error: str = "invalid_token") -> AuthenticationError:
    return AuthenticationError(description, reason="malformed", error=error)


def _b64url_decode(segment: str) -> bytes:
    """Strict base64url without padding (RFC 7515 §2): only the URL-safe alphabet, canonical form."""
    if _BASE64URL.fullmatch(segment) is None or len(segment) % 4 == 1:
        raise ValueError("not base64url")
    data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    # Non-canonical trailing bits would let two different strings carry one header; refuse them.
    if base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii") != segment:
        raise ValueError("not canonical base64url")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §4: a JWS with duplicate header parameter names must be rejected (or the last one used).
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate header parameter")
        result[key] = value
    return result


def parse_header(token: str, *, max_length: int = MAX_TOKEN_LENGTH) -> dict[str, Any]:
    """The JOSE header of a compact JWS, checked for shape only (no I/O, nothing trusted yet).

    Raises ``AuthenticationError`` (reason ``malformed``) for anything that is not three base64url
    segments with a JSON object header.
    """
    if not isinstance(token, str) or not token:
        raise _malformed("The token is empty")
    if len(token) > max_length:
        raise _malformed(f"The token is longer than {max_length} characters")
    if not token.isascii():
        raise _malformed("The token contains non-ASCII characters")
    segments = token.split(".")
    if len(segments) != 3:
        raise _malformed("The token must have three dot-separated segments (a signed JWT)")
    if not segments[0] or not segments[1]:
        raise _malformed("The token has an empty header or payload segment")
    try:
        header = json.loads(_b64url_decode(segments[0]), object_pairs_hook=_no_duplicates)
    except (ValueError, binascii.Error, RecursionError):
        raise _malformed("The token header is not base64url-encoded JSON") from None
    if not isinstance(header, dict):
        raise _malformed("The token header is not a JSON object")
    return header


def _numeric(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    invalid = AuthenticationError(f"The '{name}' claim must be a number of seconds", reason="invalid_claims")
    # bool is an int in Python; "exp": true is not a time.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid
    try:
        seconds = float(value)  # JSON integers are unbounded; 10**400 does not fit a float
    except OverflowError:
        raise invalid from None
    if not math.isfinite(seconds):
        raise invalid
    return seconds


def _iso(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "a time outside the calendar range"


def _string_set(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name)
    if value is None:
        return frozenset()
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return frozenset(value)
    raise AuthenticationError(f"The '{name}' claim must be a list of strings", reason="invalid_claims")


def _regions(claims: Mapping[str, Any], name: str) -> frozenset[str]:
    value = claims.get(name)
    if value is None:
        return frozenset()
    # Cognito custom attributes are strings, so several regions arrive comma-separated.
    if isinstance(value, str):
        parts: list[Any] = value.split(",")
    elif isinstance(value, list):
        parts = value
    else:
        parts = [None]
    if not all(isinstance(part, str) for part in parts):
        raise AuthenticationError(
            f"The '{name}' claim must be a comma-separated string", reason="invalid_claims"
        )
    return frozenset(stripped for part in parts if (stripped := part.strip()))


def _map_pyjwt_error(error: jwt_errors.PyJWTError) -> NoReturn:
    """Translate a PyJWT exception into our reasons; PyJWT's own text is not passed on."""
    reason: AuthFailureReason
    if isinstance(error, jwt_errors.InvalidSignatureError):
        reason, description = "bad_signature", "The signature is invalid"
    elif isinstance(error, jwt_errors.DecodeError):
        reason, description = "malformed", "The token could not be decoded"
    elif isinstance(error, jwt_errors.InvalidAlgorithmError):
        reason, description = "bad_algorithm", "The token's algorithm is not allowed"
    elif isinstance(error, jwt_errors.InvalidIssuerError):
        reason, description = "bad_issuer", "The issuer is invalid"
    elif isinstance(error, jwt_errors.MissingRequiredClaimError):
        claim = error.claim
        reason = (
            "bad_issuer" if claim == "iss" else "bad_token_use" if claim == "token_use" else "invalid_claims"
        )
        description = f"The token has no '{claim}' claim"
    elif isinstance(error, jwt_errors.InvalidKeyError):
        reason, description = "bad_signature", "The signature key is not usable"
    elif isinstance(error, jwt_errors.InvalidTokenError):
        reason, description = "invalid_claims", "The token's claims are invalid"
    else:
        reason, description = "malformed", "The token could not be decoded"
    raise AuthenticationError(description, reason=reason) from None


class TokenValidator:
    """Validates Cognito access/ID tokens against one issuer and app client id (``audience``)."""

    def __init__(
        self,
        jwks: JwksCache,
        *,
        issuer: str,
        audience: str,
        leeway: float = 30.0,
        claims: ClaimNames = _DEFAULT_CLAIM_NAMES,
        clock: Callable[[], float] = time.time,
        token_uses: Collection[str] = TOKEN_USES,
        max_token_length: int = MAX_TOKEN_LENGTH,
        retain_claims: bool = True,
        cache_size: int = 0,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required (the user pool's exact issuer URL)")
        if not audience:
            raise ValueError("audience is required (the app client id)")
        if leeway < 0:
            raise ValueError("leeway must be >= 0 seconds")
        unknown = set(token_uses) - TOKEN_USES
        if unknown or not token_uses:
            raise ValueError(f"token_uses must be a non-empty subset of {sorted(TOKEN_USES)}")
        self._jwks = jwks
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway
        self._claims = claims
        self._clock = clock
        self._token_uses = frozenset(token_uses)
        self._max_token_length = max_token_length
        # The service keeps a principal per connection for hours: without the raw claims it is ~2 KB
        # smaller, and nothing after validation reads them.
        self._retain_claims = retain_claims
        # A client presents the same token on negotiate, on the transport request and on every long
        # poll: remember verified tokens (until they expire) instead of verifying RS256 each time.
        self._cache_size = cache_size
        self._verified: OrderedDict[str, Principal] = OrderedDict()

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def audience(self) -> str:
        return self._audience

    async def validate(self, token: str) -> Principal:
        """The principal a valid token describes; ``AuthenticationError`` for anything else."""
        if self._cache_size:
            cached = self._verified.get(token)
            if cached is not None:
                if self._clock() <= cached.expires_at + self._leeway:
                    self._verified.move_to_end(token)
                    return cached
                del self._verified[token]  # expired: the full check below says so, precisely
        principal = await self._verify(token)
        if self._cache_size:
            self._verified[token] = principal
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        header = parse_header(token, max_length=self._max_token_length)
        alg = header.get("alg")
        if alg != ALGORITHM:
            # RFC 8725 §2.1: never let the token choose the algorithm.
            label = f" '{alg}'" if isinstance(alg, str) and _ALG_LABEL.fullmatch(alg) else ""
            raise AuthenticationError(f"The token's algorithm{label} is not allowed", reason="bad_algorithm")
        for name in _UNSUPPORTED_HEADERS:
            if name in header:
                # RFC 7515 §4.1.11: a recipient that does not understand a critical extension MUST
                # reject the JWS (CVE-2026-32597); we understand none, and b64 must come with crit.
                raise _malformed(f"The token header parameter '{name}' is not supported")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH:
            raise _malformed("The token header has no valid 'kid'")
        if not token.rsplit(".", 1)[1]:
            raise AuthenticationError("The token has no signature", reason="bad_signature")

        key = await self._jwks.get_key(kid)
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                issuer=self._issuer,
                options={
                    "verify_signature": True,
                    # Time claims are checked below against our clock; audience depends on token_use.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_aud": False,
                    "verify_iss": True,
                    "verify_sub": True,
                    "verify_jti": True,
                    "require": ["iss", "sub", "exp", "token_use"],
                    "enforce_minimum_key_length": True,
                },
            )
        except jwt_errors.PyJWTError as error:
            _map_pyjwt_error(error)
        return self._check_claims(claims)

    def _check_claims(self, claims: dict[str, Any]) -> Principal:
        # PyJWT compared already; compare again so this rule does not depend on a library version.
        if claims.get("iss") != self._issuer:
            raise AuthenticationError("The issuer is invalid", reason="bad_issuer")

        now = self._clock()
        exp = _numeric(claims, "exp")
        if exp is None:
            raise AuthenticationError("The token has no 'exp' claim", reason="invalid_claims")
        # RFC 7519 §4.1.4: the current time must be before exp.
        if now >= exp + self._leeway:
            raise AuthenticationError(f"The token expired at {_iso(exp)}", reason="expired")
        nbf = _numeric(claims, "nbf")
        if nbf is not None and nbf > now + self._leeway:
            raise AuthenticationError(f"The token is not valid before {_iso(nbf)}", reason="not_yet_valid")
        iat = _numeric(claims, "iat")
        if iat is not None and iat > now + self._leeway:
            raise AuthenticationError(
                f"The token was issued in the future ({_iso(iat)})", reason="not_yet_valid"
            )

        token_use = claims.get("token_use")
        if not isinstance(token_use, str) or token_use not in TOKEN_USES:
            raise AuthenticationError("token_use must be 'access' or 'id'", reason="bad_token_use")
        if token_use not in self._token_uses:
            allowed = " or ".join(f"'{use}'" for use in sorted(self._token_uses))
            raise AuthenticationError(f"token_use must be {allowed}", reason="bad_token_use")
        if token_use == "access":  # noqa: S105 - a claim value, not a secret
            # Cognito access tokens carry the app client in client_id and have no aud.
            if claims.get("client_id") != self._audience:
                raise AuthenticationError("The token was issued to another app client", reason="bad_audience")
        else:
            aud = claims.get("aud")
            audiences = aud if isinstance(aud, list) else [aud]
            if self._audience not in audiences:
                raise AuthenticationError("The audience is invalid", reason="bad_audience")

        subject = claims.get("sub")
        if not isinstance(subject, str) or not subject:
            raise AuthenticationError("The token has no subject ('sub')", reason="invalid_claims")
        return self._principal(claims, subject, token_use, exp)

    def _principal(self, claims: dict[str, Any], subject: str, token_use: str, exp: float) -> Principal:
        names = self._claims
        raw_contractor = claims.get(names.contractor_id)
        if raw_contractor is not None and not isinstance(raw_contractor, str):
            raise AuthenticationError(
                f"The '{names.contractor_id}' claim must be a string", reason="invalid_claims"
            )
        contractor = (raw_contractor or "").strip() or subject
        username = claims.get("username", claims.get("cognito:username"))
        return Principal(
            subject=subject,
            username=username if isinstance(username, str) else None,
            token_use=token_use,
            roles=_string_set(claims, names.groups),
            regions=_regions(claims, names.region),
            contractor_id=canonical_uuid(contractor) or contractor,
            expires_at=exp,
            claims=claims if self._retain_claims else {},
        )


def extract_token(authorization: str | None, query_access_token: str | None) -> str:
    """The bearer token of a request: ``Authorization: Bearer`` wins, else the ``access_token`` query.

    Browsers cannot set headers on WebSocket/EventSource requests, so the SignalR JS client sends the
    token as ``?access_token=`` there (ASP.NET Core docs, "Authentication and authorization in ASP.NET
    Core SignalR", built-in JWT authentication). Raises ``MissingTokenError`` when neither
    is present and ``AuthenticationError(error="invalid_request")`` for a malformed header or value.
    """
    if authorization is not None:
        parts = authorization.split()
        if not parts:
            raise _malformed("The Authorization header is empty", error="invalid_request")
        # RFC 7235 §2.1: the auth-scheme is case-insensitive.
        if parts[0].lower() != "bearer":
            raise _malformed("The Authorization header must use the Bearer scheme", error="invalid_request")
        if len(parts) == 1:
            raise _malformed("The Authorization header has no bearer token", error="invalid_request")
        if len(parts) > 2:
            raise _malformed("The bearer token must not contain spaces", error="invalid_request")
        return parts[1]
    if query_access_token is not None:
        if not query_access_token:
            raise _malformed("The access_token query parameter is empty", error="invalid_request")
        return query_access_token
    raise MissingTokenError()


def _quote(text: str) -> str:
    # Header values must stay printable ASCII; RFC 7230 quoted-string escapes '"' and '\'.
    safe = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return safe.replace("\\", "\\\\").replace('"', '\\"')


def www_authenticate(error: AuthenticationError) -> str:
    """The ``WWW-Authenticate`` value for a 401 (RFC 6750 §3): bare ``Bearer`` when no token was sent."""
    if isinstance(error, MissingTokenError) or not error.error:
        return "Bearer"
    return f'Bearer error="{error.error}", error_description="{_quote(error.description)}"'
