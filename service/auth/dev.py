"""Development token issuer: a local RSA key that mints Cognito-shaped tokens for the real validator.

Rule: this exists only for ``AUTH_DEV_MODE=true`` and tests. Dev tokens go through exactly the same
``TokenValidator`` and ``JwksCache`` as Cognito tokens (via a ``file://`` JWKS written here), so
development never exercises a weaker code path. The private key lives in ``key_dir`` (mode 0600,
git-ignored ``.dev/``) and is created on first use; the same key directory always gives the same ``kid``.

Constructing a ``DevIssuer`` reads or generates a key (blocking, ~0.1 s for a new key). A service
names its issuer with ``DevKeys`` when the app is built and loads the key at startup (in a worker
thread), never inside a request handler.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import jwt
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.auth.jwks import MIN_RSA_KEY_BITS
from service.auth.tokens import ClaimNames

__all__ = [
    "DEV_AUDIENCE",
    "DEV_ISSUER",
    "DEV_JWKS_FILE_NAME",
    "KEY_FILE_NAME",
    "DevIssuer",
    "DevKeyError",
    "DevKeys",
    "jwk_thumbprint",
]

log = structlog.get_logger(__name__)

DEV_ISSUER = "http://localhost:5004/dev"
DEV_AUDIENCE = "smartscheduler-dev"
KEY_FILE_NAME = "dev-signing-key.pem"
DEV_JWKS_FILE_NAME = "jwks.json"
_RSA_ALGORITHMS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_DEFAULT_CLAIM_NAMES = ClaimNames()


class DevKeyError(Exception):
    """The development key file exists but is not a usable RSA private key."""


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def jwk_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of an RSA public key."""
    numbers = public_key.public_numbers()
    # RFC 7638 §3.2: required members only, lexicographic order, no whitespace.
    canonical = json.dumps(
        {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _load_or_create_key(key_dir: Path) -> rsa.RSAPrivateKey:
    path = key_dir / KEY_FILE_NAME
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        pem = path.read_bytes()
    except FileNotFoundError:
        return _create_key(path)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("auth.dev_key_readable_by_others", keyPath=str(path), mode=f"{mode:o}", fix="chmod 600")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise DevKeyError(
            f"{path} is not an unencrypted PEM private key ({error}); delete it to create a new one"
        ) from None
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_RSA_KEY_BITS:
        raise DevKeyError(
            f"{path} is not an RSA key of at least {MIN_RSA_KEY_BITS} bits; delete it to create a new one"
        )
    return key


def _create_key(path: Path) -> rsa.RSAPrivateKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Written to a private temporary file (0600 from creation, never briefly world-readable), then
    # published with link(), which fails if the name exists: two processes starting together cannot
    # both create a key, and nobody ever reads a half-written one. The loser loads the winner's key.
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        os.link(temporary, path)
    except FileExistsError:
        return _load_or_create_key(path.parent)
    finally:
        temporary.unlink(missing_ok=True)
    log.info("auth.dev_key_created", keyPath=str(path))
    return key


class DevIssuer:
    """Mints RS256 tokens shaped like Cognito's, verifiable with ``jwks()`` and the same issuer/audience."""

    def __init__(
        self,
        key_dir: Path,
        *,
        issuer: str = DEV_ISSUER,
        audience: str = DEV_AUDIENCE,
        claims: ClaimNames = _DEFAULT_CLAIM_NAMES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = _load_or_create_key(Path(key_dir))
        self._setup(key, Path(key_dir) / KEY_FILE_NAME, issuer, audience, claims, clock)

    def _setup(
        self,
        key: rsa.RSAPrivateKey,
        key_path: Path | None,
        issuer: str,
        audience: str,
        claims: ClaimNames,
        clock: Callable[[], float],
    ) -> None:
        self._key = key
        self._key_path = key_path
        self._public_key = key.public_key()
        self._kid = jwk_thumbprint(self._public_key)
        self.issuer = issuer
        self.audience = audience
        self._claim_names = claims
        self._clock = clock

    @classmethod
    def from_private_key(
        cls,
        private_key: rsa.RSAPrivateKey,
        *,
        issuer: str = DEV_ISSUER,
        audience: str = DEV_AUDIENCE,
        claims: ClaimNames = _DEFAULT_CLAIM_NAMES,
        clock: Callable[[], float] = time.time,
    ) -> DevIssuer:
        """An issuer for a key already in memory (tests reuse one key instead of loading a file each time)."""
        if private_key.key_size < MIN_RSA_KEY_BITS:
            raise DevKeyError(f"the development key must have at least {MIN_RSA_KEY_BITS} bits")
        instance = cls.__new__(cls)
        instance._setup(private_key, None, issuer, audience, claims, clock)
        return instance

    @property
    def kid(self) -> str:
        """RFC 7638 thumbprint of the public key: stable for as long as the key file is."""
        return self._kid

    @property
    def key_path(self) -> Path | None:
        """The PEM file holding the private key (``None`` for ``from_private_key``)."""
        return self._key_path

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._public_key

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (one RS256 signing key)."""
        numbers = self._public_key.public_numbers()
        return {
            "keys": [
                {
                    "kid": self._kid,
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "n": _b64url_uint(numbers.n),
                    "e": _b64url_uint(numbers.e),
                }
            ]
        }

    def write_jwks(self, path: Path) -> None:
        """Write ``jwks()`` to ``path`` atomically (readers never see half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.write_text(json.dumps(self.jwks(), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)

    def claims(
        self,
        *,
        subject: str,
        roles: Sequence[str] = (),
        regions: Sequence[str] = (),
        contractor_id: str | None = None,
        token_use: Literal["access", "id"] = "access",  # noqa: S107 - a claim value, not a secret
        ttl_seconds: int = 3600,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The payload ``mint`` signs. ``extra_claims`` are applied last and may override anything."""
        if isinstance(roles, str) or isinstance(regions, str):
            # A bare string would become one role per character.
            raise TypeError("roles and regions are sequences of strings, not a string")
        now = int(self._clock())
        names = self._claim_names
        payload: dict[str, Any] = {
            "sub": subject,
            "iss": self.issuer,
            "token_use": token_use,
            "auth_time": now,
            "iat": now,
            "exp": now + ttl_seconds,
            "jti": str(uuid.uuid4()),
            "origin_jti": str(uuid.uuid4()),
        }
        # Cognito: access tokens name the app client in client_id and the user in "username";
        # ID tokens use aud and "cognito:username".
        if token_use == "access":  # noqa: S105 - a claim value, not a secret
            payload.update(client_id=self.audience, username=subject, scope="aws.cognito.signin.user.admin")
        else:
            payload.update({"aud": self.audience, "cognito:username": subject})
        if roles:
            payload[names.groups] = list(roles)
        if regions:
            payload[names.region] = ",".join(regions)
        if contractor_id is not None:
            payload[names.contractor_id] = contractor_id
        if extra_claims:
            payload.update(extra_claims)
        return payload

    def sign(
        self,
        payload: Mapping[str, Any],
        *,
        headers: Mapping[str, Any] | None = None,
        algorithm: str = "RS256",
    ) -> str:
        """Sign ``payload`` with the dev key; ``headers`` are merged over ``{"kid": ...}``.

        Other RSA algorithms exist only so tests can produce tokens the validator must refuse.
        """
        if algorithm not in _RSA_ALGORITHMS:
            raise ValueError(f"the development key is RSA; {algorithm!r} is not an RSA algorithm")
        return jwt.encode(
            dict(payload), self._key, algorithm=algorithm, headers={"kid": self._kid, **(headers or {})}
        )

    def mint(
        self,
        *,
        subject: str,
        roles: Sequence[str] = (),
        regions: Sequence[str] = (),
        contractor_id: str | None = None,
        token_use: Literal["access", "id"] = "access",  # noqa: S107 - a claim value, not a secret
        ttl_seconds: int = 3600,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A signed token for ``subject`` that passes ``TokenValidator`` with this issuer and audience."""
        return self.sign(
            self.claims(
                subject=subject,
                roles=roles,
                regions=regions,
                contractor_id=contractor_id,
                token_use=token_use,
                ttl_seconds=ttl_seconds,
                extra_claims=extra_claims,
            )
        )


class DevKeys:
    """The development issuer of a service: named when the app is built, its key loaded at startup.

    ``jwks_url`` is known at once (the validator is built on it); ``load`` reads or creates the key in
    ``key_dir`` and writes the JWKS there (blocking file I/O and key generation: run it in a worker
    thread). ``issuer`` is the loaded ``DevIssuer``.
    """

    def __init__(self, key_dir: Path, *, claims: ClaimNames = _DEFAULT_CLAIM_NAMES) -> None:
        self.key_dir = Path(key_dir)
        self.jwks_path = (self.key_dir / DEV_JWKS_FILE_NAME).absolute()
        self._claims = claims
        self._issuer: DevIssuer | None = None

    @property
    def jwks_url(self) -> str:
        return self.jwks_path.as_uri()

    def load(self) -> DevIssuer:
        """Read (or create) the signing key and publish its JWKS at ``jwks_path``."""
        issuer = DevIssuer(self.key_dir, claims=self._claims)
        issuer.write_jwks(self.jwks_path)
        self._issuer = issuer
        return issuer

    @property
    def issuer(self) -> DevIssuer:
        if self._issuer is None:
            # A programming error: the app loads the key before it serves any request.
            raise RuntimeError("DevKeys.load() has not run; the app loads the key at startup")
        return self._issuer
