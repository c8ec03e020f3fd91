"""Tokens for tests: valid Cognito-shaped tokens per role, and the forged ones an attacker would send.

Rule: every token here is signed by a key generated at run time (never a key in the repository), and
the matching JWKS is written to the test's tmp dir, so a test validates through the real
``JwksCache`` (``file://``) and ``TokenValidator`` exactly as production does.

RSA keys are generated once per process and reused (generating or loading one costs ~40 ms, and many
suites build a factory per test); a factory still gets its own tmp dir and JWKS file.

Use the ``token_factory`` fixture: ``tests/conftest.py`` lists this module in ``pytest_plugins``
(a conftest elsewhere may also ``from tests.support.tokens import token_factory``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from service.auth.dev import DevIssuer
from service.auth.jwks import JwksCache
from service.auth.tokens import ClaimNames, TokenValidator

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_ISSUER",
    "TokenFactory",
    "b64url",
    "forge",
    "pooled_rsa_key",
    "token_factory",
]

# Shaped like a real Cognito pool so issuer-comparison tests look at realistic strings.
DEFAULT_ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_TestPool1"
DEFAULT_AUDIENCE = "test-app-client-id"
OTHER_ISSUER = "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_OtherPool"
OTHER_CLIENT_ID = "another-app-client-id"


@functools.cache
def pooled_rsa_key(slot: int = 0) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key generated once per process per ``slot`` (distinct slots, distinct keys)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _attacker_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@functools.cache
def _attacker_ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def b64url(data: bytes | str | Mapping[str, Any]) -> str:
    """base64url without padding, of bytes, text, or a JSON object (compact separators)."""
    if isinstance(data, Mapping):
        data = json.dumps(data, separators=(",", ":"))
    if isinstance(data, str):
        data = data.encode("utf-8")
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def forge(header: Mapping[str, Any], payload: Mapping[str, Any], signature: bytes = b"") -> str:
    """A compact JWS assembled by hand, for tokens no honest library would produce."""
    return f"{b64url(header)}.{b64url(payload)}.{b64url(signature)}"


class TokenFactory:
    """Mints tokens for one fake user pool whose JWKS lives at ``jwks_url`` (a ``file://`` URL)."""

    def __init__(
        self,
        base_dir: Path,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        claims: ClaimNames | None = None,
        clock: Callable[[], float] = time.time,
        key_slot: int = 0,
    ) -> None:
        self.base_dir = Path(base_dir)
        self.issuer = issuer
        self.audience = audience
        self.clock = clock
        self.claim_names = claims or ClaimNames()
        self._private_key = pooled_rsa_key(key_slot)
        self.dev = DevIssuer.from_private_key(
            self._private_key, issuer=issuer, audience=audience, claims=self.claim_names, clock=clock
        )
        self.jwks_path = self.base_dir / "jwks.json"
        self.dev.write_jwks(self.jwks_path)
        self.jwks_url = self.jwks_path.as_uri()

    @property
    def kid(self) -> str:
        return self.dev.kid

    @property
    def now(self) -> int:
        return int(self.clock())

    # --- wiring ---------------------------------------------------------------------------------

    def jwks_cache(self, **kwargs: Any) -> JwksCache:
        """A ``JwksCache`` on this factory's JWKS file (caller closes it)."""
        return JwksCache(self.jwks_url, **kwargs)

    def validator(self, jwks: JwksCache | None = None, **kwargs: Any) -> TokenValidator:
        """A ``TokenValidator`` for this pool, using this factory's clock unless ``clock=`` is given."""
        kwargs.setdefault("clock", self.clock)
        kwargs.setdefault("claims", self.claim_names)
        return TokenValidator(jwks or self.jwks_cache(), issuer=self.issuer, audience=self.audience, **kwargs)

    # --- valid tokens ---------------------------------------------------------------------------

    def claims(self, *, subject: str | None = None, **kwargs: Any) -> dict[str, Any]:
        """The payload ``mint`` would sign (for tests that alter it before signing)."""
        return self.dev.claims(subject=subject or str(uuid.uuid4()), **kwargs)

    def mint(
        self,
        *,
        subject: str | None = None,
        roles: Sequence[str] = (),
        regions: Sequence[str] = (),
        contractor_id: str | None = None,
        token_use: Literal["access", "id"] = "access",  # noqa: S107 - a claim value, not a secret
        ttl_seconds: int = 3600,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        return self.dev.mint(
            subject=subject or str(uuid.uuid4()),
            roles=roles,
            regions=regions,
            contractor_id=contractor_id,
            token_use=token_use,
            ttl_seconds=ttl_seconds,
            extra_claims=extra_claims,
        )

    def dispatcher(self, regions: Sequence[str] = ("north-america",), **kwargs: Any) -> str:
        return self.mint(roles=("Dispatcher",), regions=regions, **kwargs)

    def contractor(self, contractor_id: str, **kwargs: Any) -> str:
        return self.mint(roles=("Contractor",), contractor_id=contractor_id, **kwargs)

    def admin(self, **kwargs: Any) -> str:
        return self.mint(roles=("Admin",), **kwargs)

    def id_token(self, **kwargs: Any) -> str:
        """A Cognito ID token (``aud`` instead of ``client_id``), valid for this pool."""
        kwargs.setdefault("roles", ("Dispatcher",))
        kwargs.setdefault("regions", ("north-america",))
        return self.mint(token_use="id", **kwargs)

    # --- tokens the validator must refuse -------------------------------------------------------

    def expired(self, seconds_ago: int = 3600) -> str:
        now = self.now
        return self.dispatcher(
            extra_claims={
                "iat": now - seconds_ago - 3600,
                "auth_time": now - seconds_ago - 3600,
                "exp": now - seconds_ago,
            }
        )

    def not_yet_valid(self, seconds_ahead: int = 3600) -> str:
        return self.dispatcher(extra_claims={"nbf": self.now + seconds_ahead})

    def wrong_issuer(self, issuer: str = OTHER_ISSUER) -> str:
        return self.dispatcher(extra_claims={"iss": issuer})

    def wrong_audience(self, client_id: str = OTHER_CLIENT_ID) -> str:
        """An access token minted for another app client of the same pool."""
        return self.dispatcher(extra_claims={"client_id": client_id})

    def signed_by_unknown_key(self) -> str:
        """Signed by an attacker's RSA key but naming our ``kid``: must fail as a bad signature."""
        return jwt.encode(
            self.claims(roles=("Admin",)), _attacker_rsa_key(), algorithm="RS256", headers={"kid": self.kid}
        )

    def unknown_kid(self, kid: str | None = None) -> str:
        """Signed by our key but naming a ``kid`` the JWKS does not publish."""
        return self.dev.sign(
            self.claims(roles=("Dispatcher",)), headers={"kid": kid or f"unknown-{uuid.uuid4()}"}
        )

    def hs256_with_public_key(self) -> str:
        """The 2015 key-confusion attack: HS256 keyed with the PEM of our public key."""
        pem = self.dev.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        header = {"alg": "HS256", "typ": "JWT", "kid": self.kid}
        signing_input = f"{b64url(header)}.{b64url(self.claims(roles=('Admin',)))}"
        signature = hmac.new(pem, signing_input.encode("ascii"), hashlib.sha256).digest()
        return f"{signing_input}.{b64url(signature)}"

    def alg_none(self, alg: str = "none") -> str:
        return forge({"alg": alg, "typ": "JWT", "kid": self.kid}, self.claims(roles=("Admin",)))

    def rs384(self) -> str:
        return self.dev.sign(self.claims(roles=("Dispatcher",)), algorithm="RS384")

    def signed_with(self, algorithm: str) -> str:
        """Signed with ``algorithm`` by our RSA key (RS*/PS*) or an attacker EC key (ES256), our ``kid``."""
        claims = self.claims(roles=("Dispatcher",))
        if algorithm.startswith("ES"):
            return jwt.encode(claims, _attacker_ec_key(), algorithm=algorithm, headers={"kid": self.kid})
        return self.dev.sign(claims, algorithm=algorithm)

    def sign_raw(self, header: Mapping[str, Any], payload: bytes | Mapping[str, Any]) -> str:
        """A correct RS256 signature by our key over any header and payload, even ones PyJWT would
        refuse to encode (non-string ``iss``, a non-JSON payload, a ``crit`` header...)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        signing_input = f"{b64url(header)}.{b64url(body)}".encode("ascii")
        signature = self._private_key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input.decode('ascii')}.{b64url(signature)}"

    def with_headers(self, headers: Mapping[str, Any], **claims: Any) -> str:
        """Signed correctly by our key, with extra JOSE header parameters (``crit``, ``jku``, ...)."""
        return self.dev.sign(self.claims(roles=("Dispatcher",), **claims), headers=headers)


@pytest.fixture
def token_factory(tmp_path: Path) -> TokenFactory:
    """A fresh fake user pool per test: issuer, audience, JWKS file and token helpers."""
    return TokenFactory(tmp_path / "token-factory")
