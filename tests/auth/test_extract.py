"""Where the bearer token comes from, and what the 401 says (RFC 6750 §2.1, §2.3, §3)."""

from __future__ import annotations

import pytest

from service.auth import AuthenticationError, MissingTokenError, extract_token, www_authenticate


def test_authorization_header_wins_over_query() -> None:
    assert extract_token("Bearer header-token", "query-token") == "header-token"


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER", "bEaReR"])
def test_scheme_is_case_insensitive(scheme: str) -> None:
    assert extract_token(f"{scheme} abc.def.ghi", None) == "abc.def.ghi"


def test_surrounding_whitespace_is_tolerated() -> None:
    assert extract_token("  Bearer \t abc.def.ghi  ", None) == "abc.def.ghi"


def test_query_token_used_without_header() -> None:
    # Browsers cannot set headers on WebSocket/EventSource, so the SignalR JS client uses the query.
    assert extract_token(None, "abc.def.ghi") == "abc.def.ghi"


def test_no_token_at_all_is_missing_with_no_error_code() -> None:
    with pytest.raises(MissingTokenError) as caught:
        extract_token(None, None)
    assert caught.value.error == ""
    assert caught.value.reason == "missing"
    assert www_authenticate(caught.value) == "Bearer"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "   ",
        "Basic dXNlcjpwYXNz",
        "Bearer",
        "Bearer   ",
        "Token abc",
        "Bearer abc def",
        "Bearerabc.def.ghi",
    ],
)
def test_malformed_authorization_header_is_invalid_request(header: str) -> None:
    # Authorization wins even when a query token is present: a broken header is the client's bug.
    with pytest.raises(AuthenticationError) as caught:
        extract_token(header, "query-token")
    assert caught.value.error == "invalid_request"
    assert caught.value.reason == "malformed"
    assert not isinstance(caught.value, MissingTokenError)
    assert "dXNlcjpwYXNz" not in str(caught.value)


def test_empty_query_token_is_invalid_request() -> None:
    with pytest.raises(AuthenticationError) as caught:
        extract_token(None, "")
    assert caught.value.error == "invalid_request"


def test_www_authenticate_for_invalid_token() -> None:
    error = AuthenticationError("The issuer is invalid", reason="bad_issuer")
    assert (
        www_authenticate(error) == 'Bearer error="invalid_token", error_description="The issuer is invalid"'
    )


def test_www_authenticate_for_invalid_request() -> None:
    with pytest.raises(AuthenticationError) as caught:
        extract_token("Basic x", None)
    assert www_authenticate(caught.value).startswith('Bearer error="invalid_request", error_description="')


def test_www_authenticate_escapes_quotes_and_drops_non_ascii() -> None:
    error = AuthenticationError('say "hi" \\ caf\u00e9\r\nX-Injected: 1', reason="invalid_claims")
    value = www_authenticate(error)
    assert value == 'Bearer error="invalid_token", error_description="say \\"hi\\" \\\\ caf???X-Injected: 1"'
    assert "\r" not in value
    assert "\n" not in value


def test_reason_and_error_code_are_closed_sets() -> None:
    with pytest.raises(ValueError, match="reason"):
        AuthenticationError("x", reason="whatever")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="RFC 6750"):
        AuthenticationError("x", reason="malformed", error="server_error")


def test_error_exposes_description_and_reason() -> None:
    error = AuthenticationError("The token expired at 2026-11-26T10:00:00Z", reason="expired")
    assert str(error) == error.description == "The token expired at 2026-11-26T10:00:00Z"
    assert (error.error, error.reason) == ("invalid_token", "expired")
    assert "expired" in repr(error)
