"""JwksCache: no fetch from token URLs, unknown-kid floods and outages, key rotation.

HTTP cases run against a real local aiohttp server (``jwks_server``); time moves through an injected
clock, so refresh windows are tested without sleeping. The only real waits are the fetch timeouts of
the "hanging JWKS" cases (0.2 s).
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.auth import AuthenticationError, JwksCache, JwksError, TokenValidator
from service.auth.dev import DevIssuer
from service.auth.jwks import MAX_JWKS_BYTES, parse_jwks
from tests.auth.conftest import FakeClock, JwksEndpoint
from tests.support.tokens import TokenFactory, b64url, pooled_rsa_key

WINDOW = 10.0


def b64uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    numbers = key.public_key().public_numbers()
    return {"kid": kid, "kty": "RSA", "n": b64uint(numbers.n), "e": b64uint(numbers.e), **extra}


async def reason_of(call: Callable[[], Any]) -> str:
    with pytest.raises(AuthenticationError) as caught:
        await call()
    return caught.value.reason


# --- loading and filtering --------------------------------------------------------------------


async def test_file_jwks_is_loaded_once_and_served_from_memory(token_factory: TokenFactory) -> None:
    cache = JwksCache(token_factory.jwks_url)
    await cache.hydrate()
    assert cache.kids == {token_factory.kid}
    key = await cache.get_key(token_factory.kid)
    assert isinstance(key, rsa.RSAPublicKey)
    for _ in range(100):
        assert await cache.get_key(token_factory.kid) is key
    assert cache.fetch_count == 1
    await cache.close()


async def test_first_use_without_hydrate_fetches(token_factory: TokenFactory) -> None:
    cache = JwksCache(token_factory.jwks_url)
    await cache.get_key(token_factory.kid)
    assert cache.fetch_count == 1


async def test_file_url_with_localhost_and_escaped_path(tmp_path: Path) -> None:
    issuer = DevIssuer.from_private_key(pooled_rsa_key(0))
    path = tmp_path / "dir with space" / "jwks.json"
    issuer.write_jwks(path)
    cache = JwksCache("file://localhost" + path.as_uri().removeprefix("file://"))
    await cache.get_key(issuer.kid)


def test_parse_jwks_keeps_only_rs256_signing_keys() -> None:
    key = pooled_rsa_key(0)
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - must be skipped
    ec_public = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    private_numbers = key.private_numbers()
    document = {
        "keys": [
            rsa_jwk(key, "plain"),
            rsa_jwk(key, "sig", use="sig", alg="RS256"),
            rsa_jwk(key, "enc", use="enc"),
            rsa_jwk(key, "rs512", alg="RS512"),
            rsa_jwk(key, "ps256", alg="PS256"),
            rsa_jwk(small, "small"),
            rsa_jwk(key, "with-private", d=b64uint(private_numbers.d)),
            {"kid": "ec", "kty": "EC", "crv": "P-256", "x": b64uint(ec_public.x), "y": b64uint(ec_public.y)},
            {"kid": "oct", "kty": "oct", "k": "c2VjcmV0"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kid": "bad-n", "kty": "RSA", "n": "!!", "e": "AQAB"},
            {"kid": "bad-e", "kty": "RSA", "n": rsa_jwk(key, "x")["n"], "e": "AA"},
            {"kid": "no-n", "kty": "RSA", "e": "AQAB"},
            "not an object",
            rsa_jwk(small, "plain"),  # duplicate kid: the first one stays
        ]
    }
    keys = parse_jwks(document)
    assert set(keys) == {"plain", "sig", "with-private"}
    assert all(isinstance(value, rsa.RSAPublicKey) for value in keys.values())
    assert keys["plain"].key_size == 2048
    assert keys["plain"].public_numbers() == key.public_key().public_numbers()


@pytest.mark.parametrize("document", [{}, {"keys": {}}, [], "keys", {"keys": []}, {"keys": [{"kty": "EC"}]}])
def test_parse_jwks_refuses_documents_without_usable_keys(document: Any) -> None:
    with pytest.raises(JwksError):
        parse_jwks(document)


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/jwks.json", "data:application/json,{}", "jwks.json", "file://remote-host/x.json"],
)
def test_only_https_http_and_local_file_urls(url: str) -> None:
    with pytest.raises(JwksError):
        JwksCache(url)


async def test_missing_file_is_logged_at_hydrate_and_unavailable_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = JwksCache((tmp_path / "absent.json").as_uri())
    await cache.hydrate()  # must not raise: the service starts, tokens fail until keys appear
    assert "jwks.not_loaded_at_startup" in caplog.text
    assert await reason_of(lambda: cache.get_key("any")) == "jwks_unavailable"
    with pytest.raises(JwksError, match="cannot read"):
        await cache.refresh(force=True)


# --- unknown-kid flood ------------------------------------------------------------------------


async def test_unknown_kid_flood_costs_one_fetch_per_window(
    token_factory: TokenFactory, jwks_server: JwksEndpoint, clock: FakeClock
) -> None:
    cache = JwksCache(jwks_server.url, min_refresh_interval=WINDOW, clock=clock)
    validator = token_factory.validator(cache)
    await cache.hydrate()
    assert jwks_server.jwks_requests() == 1

    good = token_factory.dispatcher()
    flood = [token_factory.unknown_kid(f"kid-{uuid.uuid4()}") for _ in range(1000)]

    # Inside the window: every unknown kid fails fast, no fetch at all, the good token still verifies.
    results = await asyncio.gather(*(validator.validate(t) for t in [*flood, good]), return_exceptions=True)
    assert all(isinstance(r, AuthenticationError) and r.reason == "unknown_key" for r in results[:-1])
    assert not isinstance(results[-1], BaseException)
    assert jwks_server.jwks_requests() == 1

    # Window over: the whole flood (arriving together) shares exactly one fetch.
    clock.advance(WINDOW)
    results = await asyncio.gather(*(validator.validate(t) for t in [*flood, good]), return_exceptions=True)
    assert all(isinstance(r, AuthenticationError) and r.reason == "unknown_key" for r in results[:-1])
    assert not isinstance(results[-1], BaseException)
    assert jwks_server.jwks_requests() == 2
    assert cache.fetch_count == 2

    # Still inside the new window: the next unknown kids fail fast again.
    clock.advance(WINDOW - 0.001)
    for token in flood[:50]:
        with pytest.raises(AuthenticationError):
            await validator.validate(token)
    assert jwks_server.jwks_requests() == 2
    await cache.close()


async def test_concurrent_first_use_is_single_flight(
    token_factory: TokenFactory, jwks_server: JwksEndpoint
) -> None:
    cache = JwksCache(jwks_server.url)
    keys = await asyncio.gather(*(cache.get_key(token_factory.kid) for _ in range(200)))
    assert len({id(key) for key in keys}) == 1
    assert jwks_server.jwks_requests() == 1
    await cache.close()


async def test_zero_interval_refetches_for_each_unknown_kid(
    token_factory: TokenFactory, jwks_server: JwksEndpoint
) -> None:
    cache = JwksCache(jwks_server.url, min_refresh_interval=0)
    await cache.hydrate()
    for _ in range(3):
        assert await reason_of(lambda: cache.get_key("nope")) == "unknown_key"
    assert jwks_server.jwks_requests() == 4
    await cache.close()


# --- URLs inside the token are never followed -------------------------------------------------


async def test_jku_x5u_jwk_headers_are_never_fetched(
    token_factory: TokenFactory, jwks_server: JwksEndpoint, clock: FakeClock
) -> None:
    cache = JwksCache(jwks_server.url, clock=clock)
    validator = token_factory.validator(cache)
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    attacker_jwk = rsa_jwk(attacker, "attacker", alg="RS256", use="sig")
    evil = {
        "jku": jwks_server.url_for("/evil/jwks.json"),
        "x5u": jwks_server.url_for("/evil/cert.pem"),
        "jwk": attacker_jwk,
        "x5c": ["MIIB"],
    }
    signed_by_attacker = DevIssuer.from_private_key(
        attacker, issuer=token_factory.issuer, audience=token_factory.audience
    ).mint(subject="x", roles=("Admin",))
    header, payload, signature = signed_by_attacker.split(".")
    forged_header = json.loads(base64.urlsafe_b64decode(header + "=="))
    forged_header.update(evil, kid="attacker")
    forged = f"{b64url(forged_header)}.{payload}.{signature}"
    assert await reason_of(lambda: validator.validate(forged)) == "unknown_key"
    # Our kid plus jku: still verified with our key only.
    assert (await validator.validate(token_factory.with_headers(evil))).has_role("Dispatcher")
    assert not [path for path in jwks_server.requests if path.startswith("/evil")]
    assert jwks_server.jwks_requests() == 1
    await cache.close()


# --- JWKS outage ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "bad_json", "no_keys", "redirect", "huge", "huge_chunked"])
async def test_failed_refresh_keeps_cached_keys(
    token_factory: TokenFactory, jwks_server: JwksEndpoint, clock: FakeClock, mode: Any
) -> None:
    cache = JwksCache(jwks_server.url, min_refresh_interval=WINDOW, clock=clock)
    validator = token_factory.validator(cache)
    await cache.hydrate()
    good = token_factory.dispatcher()

    jwks_server.mode = mode
    clock.advance(WINDOW)
    with pytest.raises(JwksError):
        await cache.refresh(force=True)
    assert cache.kids == {token_factory.kid}
    await validator.validate(good)

    clock.advance(WINDOW)
    unknown = token_factory.unknown_kid()
    assert await reason_of(lambda: validator.validate(unknown)) == "jwks_unavailable"
    requests = jwks_server.jwks_requests()
    # Right after a failure the next unknown kid fails fast: no fetch until the window is over.
    assert await reason_of(lambda: validator.validate(token_factory.unknown_kid())) == "jwks_unavailable"
    assert jwks_server.jwks_requests() == requests
    await validator.validate(good)

    # The endpoint recovers: the next allowed refresh clears the error.
    jwks_server.mode = "ok"
    clock.advance(WINDOW)
    assert await reason_of(lambda: validator.validate(unknown)) == "unknown_key"
    await cache.close()


async def test_hanging_jwks_times_out_and_cached_keys_keep_working(
    token_factory: TokenFactory, jwks_server: JwksEndpoint, clock: FakeClock
) -> None:
    cache = JwksCache(jwks_server.url, min_refresh_interval=WINDOW, fetch_timeout=0.2, clock=clock)
    validator = token_factory.validator(cache)
    await cache.hydrate()
    good = token_factory.dispatcher()

    jwks_server.mode = "hang"
    clock.advance(WINDOW)
    pending = asyncio.ensure_future(validator.validate(token_factory.unknown_kid()))
    await asyncio.sleep(0)  # let the fetch start (a scheduling point, not a wait)
    # While the fetch hangs, a cached kid verifies without waiting for it.
    principal = await asyncio.wait_for(validator.validate(good), timeout=0.1)
    assert principal.has_role("Dispatcher")
    assert not pending.done()

    with pytest.raises(AuthenticationError) as caught:
        await pending
    assert caught.value.reason == "jwks_unavailable"
    assert cache.kids == {token_factory.kid}
    # Fails fast now, no second hanging request.
    unknown = token_factory.unknown_kid()
    assert (
        await asyncio.wait_for(reason_of(lambda: validator.validate(unknown)), timeout=0.05)
        == "jwks_unavailable"
    )
    assert cache.fetch_count == 2
    await cache.close()


async def test_cancelled_waiter_does_not_cancel_the_shared_fetch(
    token_factory: TokenFactory, jwks_server: JwksEndpoint
) -> None:
    jwks_server.mode = "hang"
    cache = JwksCache(jwks_server.url, fetch_timeout=5)
    first = asyncio.ensure_future(cache.get_key(token_factory.kid))
    second = asyncio.ensure_future(cache.get_key(token_factory.kid))
    await asyncio.sleep(0)
    first.cancel()
    jwks_server.mode = "ok"
    jwks_server.release.set()
    assert isinstance(await second, rsa.RSAPublicKey)
    assert first.cancelled()
    assert cache.fetch_count == 1
    await cache.close()


async def test_http_404_is_an_error(jwks_server: JwksEndpoint) -> None:
    cache = JwksCache(jwks_server.url_for("/missing/jwks.json"))
    with pytest.raises(JwksError, match="HTTP 404"):
        await cache.refresh(force=True)
    await cache.close()


async def test_empty_key_set_is_an_error(jwks_server: JwksEndpoint) -> None:
    cache = JwksCache(jwks_server.url)
    jwks_server.document = {"keys": []}
    with pytest.raises(JwksError, match="no usable"):
        await cache.refresh(force=True)
    await cache.close()


async def test_unreachable_server(unused_tcp_port: int) -> None:
    cache = JwksCache(f"http://127.0.0.1:{unused_tcp_port}/jwks.json", fetch_timeout=2)
    with pytest.raises(JwksError, match="cannot fetch"):
        await cache.refresh(force=True)
    assert await reason_of(lambda: cache.get_key("k")) == "jwks_unavailable"
    await cache.close()


def test_size_limit_is_generous_for_real_key_sets() -> None:
    assert MAX_JWKS_BYTES >= 64 * 1024


# --- key rotation -----------------------------------------------------------------------------


async def test_new_key_is_accepted_after_one_refresh(
    token_factory: TokenFactory, jwks_server: JwksEndpoint, clock: FakeClock, tmp_path: Path
) -> None:
    cache = JwksCache(jwks_server.url, min_refresh_interval=WINDOW, clock=clock)
    validator: TokenValidator = token_factory.validator(cache)
    await cache.hydrate()
    rotated = TokenFactory(tmp_path / "rotated", key_slot=1)
    assert rotated.kid != token_factory.kid
    old_token, new_token = token_factory.dispatcher(), rotated.dispatcher()

    # Published, but we fetched a moment ago: the new kid waits for the window (fails fast meanwhile).
    jwks_server.document = {"keys": token_factory.dev.jwks()["keys"] + rotated.dev.jwks()["keys"]}
    clock.advance(WINDOW / 2)
    assert await reason_of(lambda: validator.validate(new_token)) == "unknown_key"
    assert cache.fetch_count == 1

    clock.advance(WINDOW / 2)
    assert (await validator.validate(new_token)).has_role("Dispatcher")
    assert cache.fetch_count == 2
    await validator.validate(old_token)

    # The old key is retired: once a refresh happens, tokens signed with it stop verifying.
    jwks_server.document = rotated.dev.jwks()
    clock.advance(WINDOW)
    await cache.refresh()
    assert cache.kids == {rotated.kid}
    assert await reason_of(lambda: validator.validate(old_token)) == "unknown_key"
    await validator.validate(new_token)
    await cache.close()


async def test_rotation_through_a_file_jwks(
    token_factory: TokenFactory, tmp_path: Path, clock: FakeClock
) -> None:
    cache = JwksCache(token_factory.jwks_url, min_refresh_interval=WINDOW, clock=clock)
    validator = token_factory.validator(cache)
    await cache.hydrate()
    rotated = DevIssuer.from_private_key(
        pooled_rsa_key(1), issuer=token_factory.issuer, audience=token_factory.audience
    )
    rotated.write_jwks(token_factory.jwks_path)
    clock.advance(WINDOW)
    assert (await validator.validate(rotated.mint(subject="s"))).subject == "s"


# --- session ownership ------------------------------------------------------------------------


async def test_session_from_factory_is_used_and_closed(
    token_factory: TokenFactory, jwks_server: JwksEndpoint
) -> None:
    made: list[aiohttp.ClientSession] = []

    def factory() -> aiohttp.ClientSession:
        made.append(aiohttp.ClientSession())
        return made[-1]

    cache = JwksCache(jwks_server.url, session_factory=factory)
    await cache.get_key(token_factory.kid)
    await cache.refresh(force=True)
    assert len(made) == 1
    await cache.close()
    assert made[0].closed
    with pytest.raises(JwksError, match="closed"):
        await cache.refresh(force=True)


async def test_close_cancels_a_fetch_in_flight(
    token_factory: TokenFactory, jwks_server: JwksEndpoint
) -> None:
    jwks_server.mode = "hang"
    cache = JwksCache(jwks_server.url, fetch_timeout=5)
    waiter = asyncio.ensure_future(cache.get_key(token_factory.kid))
    await asyncio.sleep(0)
    await cache.close()
    with pytest.raises((asyncio.CancelledError, AuthenticationError)):
        await waiter
