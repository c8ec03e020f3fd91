"""DevIssuer: key persistence, the JWKS it publishes, Cognito-shaped tokens, and dev-mode wiring."""

from __future__ import annotations

import json
import logging
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from config.settings import Settings
from service.auth import (
    AuthenticationError,
    DevIssuer,
    DevKeyError,
    JwksCache,
    TokenValidator,
    build_auth,
)
from service.auth.dev import DEV_AUDIENCE, DEV_ISSUER, KEY_FILE_NAME, jwk_thumbprint
from service.auth.jwks import parse_jwks
from tests.support.tokens import TokenFactory

CONTRACTOR_ID = "3f2b8c1e-6d4a-4e7b-9c2d-1a5e8f7b6c3d"

# RFC 7638 §3.1: the example key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3"
    "oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdA"
    "ZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-"
    "kEgU8awapJzKnqDKgw"
)
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_thumbprint_matches_rfc7638_example() -> None:
    key = parse_jwks({"keys": [{"kid": "x", "kty": "RSA", "n": RFC7638_N, "e": "AQAB"}]})["x"]
    assert jwk_thumbprint(key) == RFC7638_THUMBPRINT


def test_key_is_created_private_and_reused(tmp_path: Path) -> None:
    key_dir = tmp_path / "nested" / ".dev"
    first = DevIssuer(key_dir)
    key_file = key_dir / KEY_FILE_NAME
    assert first.key_path == key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_dir.stat().st_mode) & 0o077 == 0
    pem = key_file.read_bytes()

    second = DevIssuer(key_dir)
    assert second.kid == first.kid == jwk_thumbprint(first.public_key)
    assert key_file.read_bytes() == pem
    # A token from one instance verifies with the other's published key.
    token = first.mint(subject="s")
    jwt.decode(
        token,
        parse_jwks(second.jwks())[second.kid],
        algorithms=["RS256"],
        options={"verify_aud": False},
    )


def test_concurrent_first_start_yields_one_key(tmp_path: Path) -> None:
    key_dir = tmp_path / "race"
    with ThreadPoolExecutor(max_workers=4) as pool:
        kids = set(pool.map(lambda _: DevIssuer(key_dir).kid, range(4)))
    assert len(kids) == 1
    assert [p.name for p in key_dir.iterdir()] == [KEY_FILE_NAME]  # no temporary files left behind


def test_loose_key_file_mode_is_warned(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    DevIssuer(tmp_path)
    os.chmod(tmp_path / KEY_FILE_NAME, 0o644)
    caplog.set_level(logging.WARNING)
    DevIssuer(tmp_path)
    assert "auth.dev_key_readable_by_others" in caplog.text


def test_unusable_key_file_is_an_actionable_error(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE_NAME).write_text("not a key")
    with pytest.raises(DevKeyError, match="delete it"):
        DevIssuer(tmp_path)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / KEY_FILE_NAME).write_bytes(ec_pem)
    with pytest.raises(DevKeyError, match="RSA"):
        DevIssuer(tmp_path)


def test_small_keys_are_refused() -> None:
    with pytest.raises(DevKeyError):
        DevIssuer.from_private_key(rsa.generate_private_key(public_exponent=65537, key_size=1024))  # noqa: S505 - must be refused


def test_jwks_shape_and_file(token_factory: TokenFactory) -> None:
    (jwk,) = token_factory.dev.jwks()["keys"]
    assert set(jwk) == {"kid", "kty", "alg", "use", "n", "e"}
    assert (jwk["kty"], jwk["alg"], jwk["use"], jwk["e"]) == ("RSA", "RS256", "sig", "AQAB")
    assert json.loads(token_factory.jwks_path.read_text()) == token_factory.dev.jwks()
    assert token_factory.jwks_url.startswith("file:///")
    assert "-----BEGIN" not in token_factory.jwks_path.read_text()


def test_access_token_is_shaped_like_cognito(token_factory: TokenFactory) -> None:
    claims = token_factory.dev.claims(
        subject="user-1", roles=("Dispatcher",), regions=("north", "south"), contractor_id=CONTRACTOR_ID
    )
    assert claims["token_use"] == "access"
    assert claims["client_id"] == token_factory.audience
    assert "aud" not in claims
    assert claims["username"] == "user-1"
    assert claims["cognito:groups"] == ["Dispatcher"]
    assert claims["custom:region"] == "north,south"
    assert claims["custom:contractorId"] == CONTRACTOR_ID
    assert claims["exp"] - claims["iat"] == 3600
    assert {"iss", "sub", "auth_time", "jti", "origin_jti"} <= set(claims)
    header = jwt.get_unverified_header(token_factory.dev.sign(claims))
    assert (header["alg"], header["kid"]) == ("RS256", token_factory.kid)


def test_id_token_is_shaped_like_cognito(token_factory: TokenFactory) -> None:
    claims = token_factory.dev.claims(subject="user-1", token_use="id")
    assert claims["aud"] == token_factory.audience
    assert "client_id" not in claims
    assert claims["cognito:username"] == "user-1"
    assert "cognito:groups" not in claims
    assert "custom:region" not in claims


def test_strings_are_not_role_lists(token_factory: TokenFactory) -> None:
    with pytest.raises(TypeError):
        token_factory.dev.mint(subject="s", roles="Admin")


def test_only_rsa_algorithms_can_sign(token_factory: TokenFactory) -> None:
    with pytest.raises(ValueError, match="not an RSA algorithm"):
        token_factory.dev.sign({"sub": "s"}, algorithm="HS256")


async def test_round_trip_through_the_validator(tmp_path: Path) -> None:
    issuer = DevIssuer(tmp_path / "keys")
    assert (issuer.issuer, issuer.audience) == (DEV_ISSUER, DEV_AUDIENCE)
    issuer.write_jwks(tmp_path / "keys" / "jwks.json")
    jwks = JwksCache((tmp_path / "keys" / "jwks.json").as_uri())
    validator = TokenValidator(jwks, issuer=issuer.issuer, audience=issuer.audience)
    for token_use in ("access", "id"):
        principal = await validator.validate(
            issuer.mint(
                subject="dev-user",
                roles=("Dispatcher", "Contractor"),
                regions=("north-america",),
                contractor_id=CONTRACTOR_ID.upper(),
                token_use=token_use,
                ttl_seconds=60,
            )
        )
        assert principal.subject == "dev-user"
        assert principal.token_use == token_use
        assert principal.roles == {"Dispatcher", "Contractor"}
        assert principal.regions == {"north-america"}
        assert principal.contractor_id == CONTRACTOR_ID

    # A second process on the same key directory is accepted by the same JWKS.
    again = DevIssuer(tmp_path / "keys")
    assert (await validator.validate(again.mint(subject="later"))).subject == "later"
    assert jwks.fetch_count == 1


# --- build_auth -----------------------------------------------------------------------------


def test_building_auth_reads_and_writes_nothing(tmp_path: Path) -> None:
    """Building is pure (and needs no event loop: this test has none); the key is loaded by start()."""
    key_dir = tmp_path / ".dev"
    auth = build_auth(Settings(_env_file=None, auth_dev_mode=True, auth_dev_key_dir=key_dir))
    assert auth.dev_keys is not None
    assert auth.dev_keys.jwks_url == (key_dir / "jwks.json").absolute().as_uri()
    assert not key_dir.exists()
    assert auth.jwks.fetch_count == 0
    with pytest.raises(RuntimeError, match="load"):
        auth.dev_keys.issuer  # noqa: B018 - the property is what is tested


async def test_build_auth_in_dev_mode(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(_env_file=None, auth_dev_mode=True, auth_dev_key_dir=tmp_path / ".dev")
    caplog.set_level(logging.WARNING)
    auth = build_auth(settings)
    assert auth.dev_keys is not None
    await auth.start()
    try:
        assert "auth.dev_mode_on" in caplog.text
        issuer = auth.dev_keys.issuer
        assert (tmp_path / ".dev" / KEY_FILE_NAME).exists()
        assert auth.jwks.fetch_count == 1
        assert auth.jwks.kids == {issuer.kid}
        principal = await auth.validator.validate(
            issuer.mint(subject="d", roles=("Dispatcher",), regions=("south",))
        )
        assert auth.policy.authorize_dispatch(principal, "south") == "dispatch/south"
    finally:
        await auth.close()


async def test_build_auth_in_production_mode(token_factory: TokenFactory) -> None:
    settings = Settings(
        _env_file=None,
        auth_jwks_url=token_factory.jwks_url,
        auth_issuer=token_factory.issuer,
        auth_audience=token_factory.audience,
        auth_role_dispatcher="Ops",
        auth_claim_region="custom:area",
    )
    auth = build_auth(settings)
    await auth.start()
    try:
        assert auth.dev_keys is None
        token = token_factory.mint(roles=("Ops",), extra_claims={"custom:area": "west"})
        principal = await auth.validator.validate(token)
        assert auth.policy.authorize_dispatch(principal, "west") == "dispatch/west"
        dev_token = DevIssuer.from_private_key(
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ).mint(subject="x")
        with pytest.raises(AuthenticationError, match="signature key"):
            await auth.validator.validate(dev_token)
    finally:
        await auth.close()
