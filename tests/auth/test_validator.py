"""TokenValidator: malformed tokens, algorithm attacks, identity context, time claims, and the Principal.

Every token is validated through a real ``JwksCache`` on the factory's ``file://`` JWKS; every
rejection is checked for its reason label and for not echoing the token.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from service.auth import AuthenticationError, ClaimNames, JwksCache, Principal, TokenValidator
from service.auth.tokens import MAX_TOKEN_LENGTH
from tests.auth.conftest import FakeClock
from tests.support.tokens import OTHER_ISSUER, TokenFactory, b64url, forge

CONTRACTOR_ID = "3f2b8c1e-6d4a-4e7b-9c2d-1a5e8f7b6c3d"


@pytest.fixture
async def jwks(token_factory: TokenFactory) -> AsyncIterator[JwksCache]:
    cache = token_factory.jwks_cache()
    await cache.hydrate()
    yield cache
    await cache.close()


@pytest.fixture
def validator(token_factory: TokenFactory, jwks: JwksCache) -> TokenValidator:
    return token_factory.validator(jwks)


async def rejected(validator: TokenValidator, token: str) -> AuthenticationError:
    """The AuthenticationError for ``token``, checked to be safe to show: no token text inside."""
    with pytest.raises(AuthenticationError) as caught:
        await validator.validate(token)
    error = caught.value
    assert error.error == "invalid_token"
    text = f"{error} {error.description} {error!r}"
    for segment in token.split("."):
        if len(segment) >= 8:
            assert segment not in text
    return error


# --- accepted tokens ---------------------------------------------------------------------------


async def test_valid_access_token_gives_principal(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    token = token_factory.mint(
        subject="user-1",
        roles=("Dispatcher", "Contractor"),
        regions=("north-america", " South ", "", "EU"),
        contractor_id=CONTRACTOR_ID.upper(),
        extra_claims={"email": "a@example.com", "nested": {"list": [1, 2]}},
    )
    principal = await validator.validate(token)
    assert principal.subject == "user-1"
    assert principal.username == "user-1"
    assert principal.token_use == "access"
    assert principal.roles == {"Dispatcher", "Contractor"}
    assert principal.has_role("Dispatcher")
    assert not principal.has_role("dispatcher")
    assert principal.regions == {"north-america", "South", "EU"}
    assert principal.contractor_id == CONTRACTOR_ID
    assert principal.expires_at == pytest.approx(token_factory.now + 3600, abs=2)
    assert principal.claims["client_id"] == token_factory.audience
    # The claims are a read-only deep copy, and stay out of repr (they hold personal data).
    with pytest.raises(TypeError):
        principal.claims["sub"] = "someone-else"  # type: ignore[index]
    assert principal.claims["nested"]["list"] == (1, 2)
    assert "a@example.com" not in repr(principal)
    hash(principal)


async def test_valid_id_token_is_accepted_with_aud(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    principal = await validator.validate(token_factory.id_token(subject="user-2"))
    assert principal.token_use == "id"
    assert principal.username == "user-2"  # from cognito:username
    assert principal.regions == {"north-america"}


async def test_contractor_id_falls_back_to_sub(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    principal = await validator.validate(token_factory.mint(subject=CONTRACTOR_ID.upper()))
    assert principal.contractor_id == CONTRACTOR_ID
    assert principal.subject == CONTRACTOR_ID.upper()  # the subject itself is kept as issued
    assert principal.roles == frozenset()
    assert principal.regions == frozenset()


async def test_non_uuid_contractor_id_is_kept_as_given(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    principal = await validator.validate(token_factory.mint(contractor_id="Legacy-42"))
    assert principal.contractor_id == "Legacy-42"


async def test_jku_x5u_jwk_headers_are_ignored_for_a_good_token(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    token = token_factory.with_headers(
        {"jku": "https://evil.example/jwks.json", "x5u": "https://evil.example/c"}
    )
    assert (await validator.validate(token)).has_role("Dispatcher")


async def test_custom_claim_names(token_factory: TokenFactory, jwks: JwksCache) -> None:
    names = ClaimNames(groups="roles", region="custom:area", contractor_id="custom:cid")
    validator = token_factory.validator(jwks, claims=names)
    token = token_factory.mint(
        extra_claims={
            "roles": ["Admin"],
            "custom:area": "west",
            "custom:cid": CONTRACTOR_ID,
            "cognito:groups": ["X"],
        }
    )
    principal = await validator.validate(token)
    assert principal.roles == {"Admin"}
    assert principal.regions == {"west"}
    assert principal.contractor_id == CONTRACTOR_ID


# --- missing, malformed, truncated -------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "abc.def",  # two segments
        "a.b.c.d",
        "a.b.c.d.e",  # JWE compact form
        ".payload.sig",
        "header..sig",
        "!!!.e30.sig",  # not base64url
        "eyJhbGciOiJSUzI1NiJ9=.e30.sig",  # padding is not base64url
        b64url("not json") + ".e30.sig",
        b64url("[1, 2]") + ".e30.sig",
        b64url('"RS256"') + ".e30.sig",
        b64url('{"alg":"RS256","alg":"none"}') + ".e30.sig",  # duplicate header names
        "eyJhbGciOiJSUzI1NiJ9\u00e9.e30.sig",
    ],
)
async def test_malformed_tokens(validator: TokenValidator, jwks: JwksCache, token: str) -> None:
    error = await rejected(validator, token)
    assert error.reason == "malformed"
    assert jwks.fetch_count == 1  # only hydrate: nothing in a malformed token triggers a fetch


async def test_overlong_token_is_refused_before_parsing(validator: TokenValidator) -> None:
    error = await rejected(validator, "a" * (MAX_TOKEN_LENGTH + 1))
    assert error.reason == "malformed"
    assert str(MAX_TOKEN_LENGTH) in error.description


@pytest.mark.parametrize("cut", [10, 30, 200])
async def test_truncated_tokens(token_factory: TokenFactory, validator: TokenValidator, cut: int) -> None:
    token = token_factory.dispatcher()
    error = await rejected(validator, token[: len(token) - cut])
    assert error.reason in {"malformed", "bad_signature"}


async def test_token_cut_inside_payload_is_malformed(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    token = token_factory.dispatcher()
    header, payload, _ = token.split(".")
    assert (await rejected(validator, f"{header}.{payload[:20]}")).reason == "malformed"


async def test_signed_payload_that_is_not_json_is_malformed(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    token = token_factory.sign_raw({"alg": "RS256", "kid": token_factory.kid}, b"not json at all")
    assert (await rejected(validator, token)).reason == "malformed"


async def test_signed_payload_that_is_a_json_array_is_malformed(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    token = token_factory.sign_raw({"alg": "RS256", "kid": token_factory.kid}, b"[1,2,3]")
    assert (await rejected(validator, token)).reason == "malformed"


async def test_tampered_payload_is_bad_signature(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    header, _, signature = token_factory.dispatcher().split(".")
    escalated = b64url(token_factory.claims(roles=("Admin",)))
    assert (await rejected(validator, f"{header}.{escalated}.{signature}")).reason == "bad_signature"


async def test_missing_signature_is_refused(token_factory: TokenFactory, validator: TokenValidator) -> None:
    header, payload, _ = token_factory.dispatcher().split(".")
    assert (await rejected(validator, f"{header}.{payload}.")).reason == "bad_signature"


@pytest.mark.parametrize("kid", [None, "", 42, ["kid"], "k" * 257])
async def test_kid_is_required(token_factory: TokenFactory, validator: TokenValidator, kid: Any) -> None:
    header: dict[str, Any] = {"alg": "RS256"}
    if kid is not None:
        header["kid"] = kid
    token = token_factory.sign_raw(header, token_factory.claims())
    assert (await rejected(validator, token)).reason == "malformed"


# --- algorithm attacks (RFC 8725 §2.1) ---------------------------------------------------------


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE", ""])
async def test_alg_none_is_refused(
    token_factory: TokenFactory, validator: TokenValidator, jwks: JwksCache, alg: str
) -> None:
    error = await rejected(validator, token_factory.alg_none(alg))
    assert error.reason == "bad_algorithm"
    assert jwks.fetch_count == 1  # refused before any key lookup


async def test_alg_none_with_a_signature_is_refused(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    token = forge({"alg": "none", "kid": token_factory.kid}, token_factory.claims(), b"anything")
    assert (await rejected(validator, token)).reason == "bad_algorithm"


async def test_hs256_keyed_with_the_public_key_is_refused(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    error = await rejected(validator, token_factory.hs256_with_public_key())
    assert error.reason == "bad_algorithm"
    assert error.description == "The token's algorithm 'HS256' is not allowed"


@pytest.mark.parametrize("alg", ["RS384", "RS512", "PS256", "PS384", "ES256"])
async def test_other_asymmetric_algorithms_are_refused(
    token_factory: TokenFactory, validator: TokenValidator, alg: str
) -> None:
    error = await rejected(validator, token_factory.signed_with(alg))
    assert error.reason == "bad_algorithm"
    assert f"'{alg}'" in error.description


async def test_rs384_helper(token_factory: TokenFactory, validator: TokenValidator) -> None:
    assert (await rejected(validator, token_factory.rs384())).reason == "bad_algorithm"


@pytest.mark.parametrize("alg", [None, ["RS256"], "rs256", "RS256 ", "x" * 100])
async def test_alg_must_be_exactly_rs256(
    token_factory: TokenFactory, validator: TokenValidator, alg: Any
) -> None:
    header: dict[str, Any] = {"kid": token_factory.kid}
    if alg is not None:
        header["alg"] = alg
    error = await rejected(validator, token_factory.sign_raw(header, token_factory.claims()))
    assert error.reason == "bad_algorithm"
    assert "x" * 40 not in error.description  # odd values are not echoed


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"], "exp": 1},
        {"crit": ["b64"], "b64": True},
        {"crit": []},
        {"crit": "b64"},
        {"b64": True},
        {"b64": False, "crit": ["b64"]},
    ],
)
async def test_crit_and_b64_headers_are_refused(
    token_factory: TokenFactory, validator: TokenValidator, extra: dict[str, Any]
) -> None:
    token = token_factory.sign_raw(
        {"alg": "RS256", "kid": token_factory.kid, **extra}, token_factory.claims()
    )
    error = await rejected(validator, token)
    assert error.reason == "malformed"
    assert "not supported" in error.description


async def test_signed_by_another_key_with_our_kid_is_bad_signature(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    assert (await rejected(validator, token_factory.signed_by_unknown_key())).reason == "bad_signature"


async def test_unknown_kid(token_factory: TokenFactory, validator: TokenValidator) -> None:
    error = await rejected(validator, token_factory.unknown_kid())
    assert error.reason == "unknown_key"
    assert error.description == "The signature key was not found"


# --- wrong identity context --------------------------------------------------------------------


def issuer_variants(issuer: str) -> list[str]:
    return [
        OTHER_ISSUER,
        issuer + "/",
        issuer + "x",
        issuer + "/.well-known/jwks.json",
        issuer[:-1],
        "x" + issuer,
        issuer.upper(),
        issuer.replace("https://", "http://"),
        issuer.replace("us-east-1_TestPool1", "us-east-1_TestPool2"),
        issuer.replace("cognito-idp.", "issuer-cognito-idp."),  # the "UPDATED" issuer spelling
        issuer.replace("us-east-1.", "us-west-2."),
        issuer.replace("TestPool1", "TestPool1 "),
        "",
    ]


async def test_wrong_issuer_variants(token_factory: TokenFactory, validator: TokenValidator) -> None:
    for issuer in issuer_variants(token_factory.issuer):
        error = await rejected(validator, token_factory.wrong_issuer(issuer))
        assert (error.reason, error.description) == ("bad_issuer", "The issuer is invalid"), issuer


@pytest.mark.parametrize("value", ["<missing>", None, ["<issuer>"], 1])
async def test_issuer_claim_shape(token_factory: TokenFactory, validator: TokenValidator, value: Any) -> None:
    claims = token_factory.claims()
    if value == "<missing>":
        del claims["iss"]
    else:
        claims["iss"] = [token_factory.issuer] if value == ["<issuer>"] else value
    error = await rejected(
        validator, token_factory.sign_raw({"alg": "RS256", "kid": token_factory.kid}, claims)
    )
    assert error.reason == "bad_issuer"


async def test_access_token_of_another_app_client(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    error = await rejected(validator, token_factory.wrong_audience())
    assert error.reason == "bad_audience"


async def test_access_token_aud_does_not_replace_client_id(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    token = token_factory.mint(extra_claims={"client_id": "other", "aud": token_factory.audience})
    assert (await rejected(validator, token)).reason == "bad_audience"


async def test_access_token_without_client_id(token_factory: TokenFactory, validator: TokenValidator) -> None:
    claims = token_factory.claims()
    del claims["client_id"]
    assert (await rejected(validator, token_factory.dev.sign(claims))).reason == "bad_audience"


@pytest.mark.parametrize(
    ("aud", "accepted"),
    [
        ("<audience>", True),
        (["other", "<audience>"], True),
        ("other", False),
        (["other"], False),
        ([], False),
        (None, False),
        ("<audience>x", False),
    ],
)
async def test_id_token_audience(
    token_factory: TokenFactory, validator: TokenValidator, aud: Any, accepted: bool
) -> None:
    def fill(value: Any) -> Any:
        if isinstance(value, list):
            return [fill(item) for item in value]
        return value.replace("<audience>", token_factory.audience) if isinstance(value, str) else value

    token = token_factory.id_token(extra_claims={"aud": fill(aud)})
    if accepted:
        assert (await validator.validate(token)).token_use == "id"
    else:
        assert (await rejected(validator, token)).reason == "bad_audience"


async def test_id_token_with_client_id_but_no_aud(
    token_factory: TokenFactory, validator: TokenValidator
) -> None:
    claims = token_factory.claims(token_use="id")
    del claims["aud"]
    claims["client_id"] = token_factory.audience
    assert (await rejected(validator, token_factory.dev.sign(claims))).reason == "bad_audience"


async def test_id_token_refused_where_only_access_tokens_are_accepted(
    token_factory: TokenFactory, jwks: JwksCache
) -> None:
    validator = token_factory.validator(jwks, token_uses={"access"})
    error = await rejected(validator, token_factory.id_token())
    assert (error.reason, error.description) == ("bad_token_use", "token_use must be 'access'")
    assert (await validator.validate(token_factory.dispatcher())).token_use == "access"


@pytest.mark.parametrize("token_use", ["<missing>", "refresh", "ID", "Access", "", None, ["access"]])
async def test_token_use_must_be_access_or_id(
    token_factory: TokenFactory, validator: TokenValidator, token_use: Any
) -> None:
    claims = token_factory.claims()
    if token_use == "<missing>":
        del claims["token_use"]
    else:
        claims["token_use"] = token_use
    error = await rejected(validator, token_factory.dev.sign(claims))
    assert error.reason == "bad_token_use"


@pytest.mark.parametrize("sub", ["<missing>", "", None, 42])
async def test_sub_is_required(token_factory: TokenFactory, validator: TokenValidator, sub: Any) -> None:
    claims = token_factory.claims()
    if sub == "<missing>":
        del claims["sub"]
    else:
        claims["sub"] = sub
    assert (await rejected(validator, token_factory.dev.sign(claims))).reason == "invalid_claims"


@pytest.mark.parametrize(
    ("claim", "value"),
    [("cognito:groups", "Admin"), ("cognito:groups", [1]), ("custom:region", 5), ("custom:contractorId", 7)],
)
async def test_claim_shapes(
    token_factory: TokenFactory, validator: TokenValidator, claim: str, value: Any
) -> None:
    error = await rejected(validator, token_factory.mint(extra_claims={claim: value}))
    assert error.reason == "invalid_claims"
    assert claim in error.description


def test_validator_configuration_is_checked(token_factory: TokenFactory) -> None:
    jwks = token_factory.jwks_cache()
    with pytest.raises(ValueError, match="issuer"):
        TokenValidator(jwks, issuer="", audience="a")
    with pytest.raises(ValueError, match="audience"):
        TokenValidator(jwks, issuer="i", audience="")
    with pytest.raises(ValueError, match="token_uses"):
        TokenValidator(jwks, issuer="i", audience="a", token_uses={"refresh"})
    with pytest.raises(ValueError, match="leeway"):
        TokenValidator(jwks, issuer="i", audience="a", leeway=-1)


# --- time claims, with leeway 30 s (RFC 7519 §4.1.4-4.1.6) -------------------------------------


@pytest.fixture
async def timed_validator(timed_factory: TokenFactory) -> AsyncIterator[TokenValidator]:
    jwks = timed_factory.jwks_cache()
    yield timed_factory.validator(jwks, leeway=30)
    await jwks.close()


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": -29}, None),
        ({"exp": -30}, "expired"),
        ({"exp": -31}, "expired"),
        ({"exp": -3600}, "expired"),
        ({"nbf": 30}, None),
        ({"nbf": 31}, "not_yet_valid"),
        ({"iat": 30}, None),
        ({"iat": 31}, "not_yet_valid"),
        ({"iat": -86_400, "exp": 60}, None),
        ({"exp": 0.5}, None),
        ({"exp": 1e300}, None),
        ({"nbf": 1e300}, "not_yet_valid"),
        ({"exp": -1e300}, "expired"),
    ],
)
async def test_time_claim_edges(
    timed_factory: TokenFactory,
    timed_validator: TokenValidator,
    clock: FakeClock,
    claims: dict[str, float],
    reason: str | None,
) -> None:
    now = clock.now
    token = timed_factory.dispatcher(extra_claims={name: now + offset for name, offset in claims.items()})
    if reason is None:
        await timed_validator.validate(token)
    else:
        assert (await rejected(timed_validator, token)).reason == reason


async def test_expiry_message_names_the_time(
    timed_factory: TokenFactory, timed_validator: TokenValidator, clock: FakeClock
) -> None:
    token = timed_factory.dispatcher(extra_claims={"exp": 1_795_687_200})  # 2026-11-26T10:00:00Z
    error = await rejected(timed_validator, token)
    assert error.description == "The token expired at 2026-11-26T10:00:00Z"


async def test_a_valid_token_expires_when_the_clock_moves(
    timed_factory: TokenFactory, timed_validator: TokenValidator, clock: FakeClock
) -> None:
    token = timed_factory.dispatcher(ttl_seconds=600)
    principal = await timed_validator.validate(token)
    assert principal.expires_at == clock.now + 600
    clock.advance(600 + 29)
    await timed_validator.validate(token)
    clock.advance(1)
    assert (await rejected(timed_validator, token)).reason == "expired"


async def test_zero_leeway(timed_factory: TokenFactory, clock: FakeClock) -> None:
    validator = timed_factory.validator(leeway=0)
    await validator.validate(timed_factory.dispatcher(extra_claims={"exp": clock.now + 1, "iat": clock.now}))
    assert (
        await rejected(validator, timed_factory.dispatcher(extra_claims={"exp": clock.now}))
    ).reason == "expired"
    early = timed_factory.dispatcher(extra_claims={"iat": clock.now + 1})
    assert (await rejected(validator, early)).reason == "not_yet_valid"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("exp", "<missing>"),
        ("exp", "1900000000"),
        ("exp", True),
        ("exp", None),
        ("nbf", "0"),
        ("iat", [1]),
        ("exp", 10**400),  # a JSON integer too large for a float
        ("iat", -(10**400)),
    ],
)
async def test_time_claims_must_be_numbers(
    timed_factory: TokenFactory, timed_validator: TokenValidator, claim: str, value: Any
) -> None:
    claims = timed_factory.claims()
    if value == "<missing>":
        del claims[claim]
    else:
        claims[claim] = value
    error = await rejected(timed_validator, timed_factory.dev.sign(claims))
    assert error.reason == "invalid_claims"


async def test_helper_tokens(token_factory: TokenFactory, validator: TokenValidator) -> None:
    assert (await rejected(validator, token_factory.expired())).reason == "expired"
    assert (await rejected(validator, token_factory.not_yet_valid())).reason == "not_yet_valid"
    assert (await validator.validate(token_factory.admin())).roles == {"Admin"}
    contractor = await validator.validate(token_factory.contractor(CONTRACTOR_ID))
    assert contractor.contractor_id == CONTRACTOR_ID


# --- logging -----------------------------------------------------------------------------------


async def test_no_token_text_in_logs(
    token_factory: TokenFactory, validator: TokenValidator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    tokens = [
        token_factory.dispatcher(),
        token_factory.expired(),
        token_factory.unknown_kid(f"kid-{uuid.uuid4()}"),
        token_factory.signed_by_unknown_key(),
        token_factory.hs256_with_public_key(),
        token_factory.wrong_issuer(),
    ]
    for token in tokens:
        with contextlib.suppress(AuthenticationError):
            await validator.validate(token)
    for token in tokens:
        for segment in token.split("."):
            assert segment not in caplog.text


def test_principal_can_be_built_directly() -> None:
    principal = Principal(
        subject="s",
        username=None,
        token_use="access",
        roles=frozenset({"Dispatcher"}),
        regions=frozenset({"north"}),
        contractor_id=None,
        expires_at=0.0,
    )
    assert dict(principal.claims) == {}
    assert principal == Principal(
        "s", None, "access", frozenset({"Dispatcher"}), frozenset({"north"}), None, 0.0
    )


# --- the verified-token cache the service turns on ---------------------------------------------


async def test_cache_verifies_a_token_once_until_it_expires(
    timed_factory: TokenFactory, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    jwks = timed_factory.jwks_cache()
    validator = timed_factory.validator(jwks, clock=clock, cache_size=2, leeway=10, retain_claims=False)
    verified: list[str] = []
    real_verify = validator._verify

    async def counting(token: str) -> Principal:
        verified.append(token)
        return await real_verify(token)

    monkeypatch.setattr(validator, "_verify", counting)
    token = timed_factory.dispatcher(ttl_seconds=60)
    first = await validator.validate(token)
    assert await validator.validate(token) is first  # negotiate, upgrade, polls: verified once
    assert verified == [token]
    assert dict(first.claims) == {}  # the service keeps no raw claims per connection

    clock.advance(60 + 11)  # past exp + leeway: the cache must not keep an expired token alive
    with pytest.raises(AuthenticationError) as expired:
        await validator.validate(token)
    assert expired.value.reason == "expired"
    await jwks.close()


async def test_cache_is_bounded_and_forgets_the_least_recent(
    token_factory: TokenFactory, jwks: JwksCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    validator = token_factory.validator(jwks, cache_size=2)
    verified: list[str] = []
    real_verify = validator._verify

    async def counting(token: str) -> Principal:
        verified.append(token)
        return await real_verify(token)

    monkeypatch.setattr(validator, "_verify", counting)
    a, b, c = (token_factory.dispatcher() for _ in range(3))
    for token in (a, b, a, c, a, b):
        await validator.validate(token)
    assert verified == [a, b, c, b]  # c pushed out b (a was used more recently)
    assert len(validator._verified) == 2
