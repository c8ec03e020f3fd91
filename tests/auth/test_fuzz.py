"""Property tests: whatever arrives as a token, the validator answers with AuthenticationError only.

The rule of OSS-Fuzz's PyJWT harness: only the library's declared error may escape.
Each example runs in its own short event loop; the JWKS is hydrated once and the clock never moves,
so no example fetches anything.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.auth import AuthenticationError, TokenValidator, parse_header
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


def outcome(validator: TokenValidator, token: str) -> str:
    """The reason label for ``token`` ("valid" if accepted); any other exception fails the test."""
    error: AuthenticationError | None = None
    try:
        asyncio.run(validator.validate(token))
    except AuthenticationError as caught:
        error = caught
    if error is None:
        return "valid"
    assert len(token) < 8 or token not in str(error)
    return error.reason


@given(st.text(max_size=300))
def test_parse_header_only_raises_authentication_error(text: str) -> None:
    reason = "parsed"
    try:
        parse_header(text)
    except AuthenticationError as error:
        reason = error.reason
    assert reason in {"parsed", "malformed"}


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200) | st.binary(max_size=200).map(lambda raw: raw.decode("latin-1")))
def test_arbitrary_text_is_refused(fuzz_validator: tuple[TokenFactory, TokenValidator], text: str) -> None:
    assert outcome(fuzz_validator[1], text) != "valid"


@settings(max_examples=200, deadline=None)
@given(headers, json_values, st.binary(max_size=64))
def test_forged_tokens_are_refused(
    fuzz_validator: tuple[TokenFactory, TokenValidator],
    header: dict[str, Any],
    payload: Any,
    signature: bytes,
) -> None:
    token = f"{b64url(header)}.{b64url(json.dumps(payload))}.{b64url(signature)}"
    assert outcome(fuzz_validator[1], token) != "valid"


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
    outcome(validator, factory.sign_raw({"alg": "RS256", "kid": factory.kid}, claims))
