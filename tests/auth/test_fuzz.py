"""Property tests: whatever arrives as a token, the validator answers with AuthenticationError only.

The rule of OSS-Fuzz's PyJWT harness: only the library's declared error may escape. A refusal carries
one of the metric's reasons; an acceptance returns the principal the token's claims describe.
Each example runs in its own short event loop; the JWKS is hydrated once and the clock never moves,
so no example fetches anything.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.auth import AuthenticationError, AuthFailureReason, Principal, TokenValidator, parse_header
from tests.support.tokens import TokenFactory, b64url

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**300, max_value=10**400)  # JSON integers beyond float range
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
headers = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "none", "HS256", "RS384", "ES256", ""]) | json_scalars,
        "kid": st.text(max_size=20) | json_scalars,
        "crit": json_values,
        "b64": st.booleans(),
        "jku": st.just("http://127.0.0.1:9/evil"),
        "typ": st.just("JWT"),
    },
)


@pytest.fixture(scope="module")
def fuzz_validator(tmp_path_factory: pytest.TempPathFactory) -> tuple[TokenFactory, TokenValidator]:
    factory = TokenFactory(Path(tmp_path_factory.mktemp("fuzz")), clock=lambda: 1_800_000_000.0)
    jwks = factory.jwks_cache(min_refresh_interval=10.0, clock=lambda: 0.0)
    asyncio.run(jwks.hydrate())
    return factory, factory.validator(jwks)


REASONS = frozenset(get_args(AuthFailureReason))


def outcome(validator: TokenValidator, token: str) -> Principal | str:
    """The principal ``token`` describes, or the reason it was refused; any other exception fails."""
    try:
        return asyncio.run(validator.validate(token))
    except AuthenticationError as caught:
        error = caught
    assert len(token) < 8 or token not in str(error)
    assert error.reason in REASONS
    return error.reason


def parsed_header(token: str) -> dict[str, Any] | AuthenticationError:
    """What ``parse_header`` returns for ``token``, or the error it raises."""
    try:
        return parse_header(token)
    except AuthenticationError as error:
        return error


def _decoded_header(token: str) -> Any:
    """The first segment of ``token`` decoded independently of the code under test."""
    segment = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


@given(st.text(max_size=300))
def test_parse_header_only_raises_authentication_error(text: str) -> None:
    header = parsed_header(text)
    if isinstance(header, AuthenticationError):
        assert header.reason == "malformed"
        return
    assert text.isascii()
    assert text.count(".") == 2
    assert isinstance(header, dict)
    assert header == _decoded_header(text)


@given(
    headers | json_values,
    st.sampled_from(["e30", "eyJzdWIiOiJ4In0"]),  # {} and {"sub":"x"}
    st.sampled_from(["", "c2lnbmF0dXJl"]),
)
def test_parse_header_returns_the_header_a_token_carries(header: Any, payload: str, signature: str) -> None:
    token = f"{b64url(json.dumps(header))}.{payload}.{signature}"
    parsed = parsed_header(token)
    if isinstance(parsed, AuthenticationError):
        assert parsed.reason == "malformed"
        assert not isinstance(header, dict)  # only a JSON object is a JOSE header
        return
    assert parsed == header


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")))
def test_arbitrary_text_is_refused(fuzz_validator: tuple[TokenFactory, TokenValidator], text: str) -> None:
    assert outcome(fuzz_validator[1], text) in REASONS


@settings(max_examples=200, deadline=None)
@given(headers, json_values, st.binary(max_size=64))
def test_forged_tokens_are_refused(
    fuzz_validator: tuple[TokenFactory, TokenValidator],
    header: dict[str, Any],
    payload: Any,
    signature: bytes,
) -> None:
    token = f"{b64url(header)}.{b64url(json.dumps(payload))}.{b64url(signature)}"
    assert outcome(fuzz_validator[1], token) in REASONS


CLAIM_NAMES = st.sampled_from(
    [
        "exp", "nbf", "iat", "sub", "iss", "token_use", "client_id", "aud", "username",
        "cognito:groups", "custom:region", "custom:contractorId",
    ]
)  # fmt: skip


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(CLAIM_NAMES | st.text(max_size=15), json_values, max_size=6))
def test_signed_tokens_with_arbitrary_extra_claims_never_crash(
    fuzz_validator: tuple[TokenFactory, TokenValidator], extra: dict[str, Any]
) -> None:
    factory, validator = fuzz_validator
    # Correctly signed by the trusted key: the claims, not the signature, are under attack here.
    claims = {**factory.claims(roles=("Dispatcher",)), **extra}
    principal = outcome(validator, factory.sign_raw({"alg": "RS256", "kid": factory.kid}, claims))
    if isinstance(principal, Principal):
        assert_describes(principal, claims, factory)


def assert_describes(principal: Principal, claims: dict[str, Any], factory: TokenFactory) -> None:
    """``principal`` is what Cognito's claims say (rules restated here, not imported from the code)."""
    assert claims["iss"] == factory.issuer
    assert isinstance(claims["sub"], str)
    assert claims["sub"]
    assert principal.subject == claims["sub"]
    assert principal.token_use == claims["token_use"]
    if claims["token_use"] == "access":
        assert claims.get("client_id") == factory.audience
    else:
        audience = claims.get("aud")
        assert factory.audience in (audience if isinstance(audience, list) else [audience])
    assert principal.expires_at == float(claims["exp"])
    assert principal.roles == frozenset(claims.get("cognito:groups") or ())
    region = claims.get("custom:region") or []
    parts = region.split(",") if isinstance(region, str) else region
    assert principal.regions == frozenset(part.strip() for part in parts if part.strip())
    contractor = (claims.get("custom:contractorId") or "").strip() or claims["sub"]
    assert principal.contractor_id is not None
    assert principal.contractor_id.lower() == contractor.lower()
    username = claims.get("username", claims.get("cognito:username"))
    assert principal.username == (username if isinstance(username, str) else None)
