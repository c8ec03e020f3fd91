"""The signing keys of the token issuer: an in-memory ``kid → RSA public key`` map fed from a JWKS URL.

Rules (after aws-jwt-verify's JWKS cache and the fixes for CVE-2026-48524 in PyJWT 2.13):

* Keys are served from memory. An unknown ``kid`` triggers a refetch, but at most one fetch starts per
  ``min_refresh_interval`` and concurrent callers share it (single flight). Until the next allowed
  refresh, a ``kid`` that is still unknown fails fast, so a flood of random ``kid``s costs one fetch.
* A failed fetch (HTTP error, timeout, bad JSON, no usable key) never evicts keys already cached.
* Only ``kty=RSA`` keys with ``use`` absent or ``sig``, ``alg`` absent or ``RS256`` and at least 2048
  bits are kept; each becomes an ``RSAPublicKey`` object (never a PEM string, which HMAC could use
  as a secret).
* The URL comes from configuration only: URLs inside tokens (``jku``, ``x5u``) are never followed.
* Nothing here blocks the event loop: http(s) goes through aiohttp's client, ``file://`` is read in a
  worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import structlog
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey, RSAPublicNumbers

from service.auth.errors import AuthenticationError, JwksError

__all__ = ["MAX_JWKS_BYTES", "MIN_RSA_KEY_BITS", "JwksCache", "parse_jwks"]

log = structlog.get_logger(__name__)

# A Cognito JWKS is about 1 KiB; anything near this size is not a key set.
MAX_JWKS_BYTES = 256 * 1024
# RFC 7518 §3.3: "A key of size 2048 bits or larger MUST be used with these algorithms."
MIN_RSA_KEY_BITS = 2048


def _b64url_uint(value: Any, name: str) -> int:
    """Decode a JWK base64url unsigned integer (RFC 7518 §2 "Base64urlUInt")."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"'{name}' must be a non-empty base64url string")
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"'{name}' is not valid base64url") from None
    return int.from_bytes(raw, "big")


def _rsa_key(jwk: Mapping[str, Any]) -> RSAPublicKey:
    # Build the key from n and e only: a JWK that also carries private members ("d", "p", …) must
    # still give us nothing more than a public key.
    numbers = RSAPublicNumbers(_b64url_uint(jwk.get("e"), "e"), _b64url_uint(jwk.get("n"), "n"))
    key = numbers.public_key()
    if key.key_size < MIN_RSA_KEY_BITS:
        raise ValueError(f"key is {key.key_size} bits; at least {MIN_RSA_KEY_BITS} are required")
    return key


def parse_jwks(document: Any) -> dict[str, RSAPublicKey]:
    """The usable RS256 signing keys of a decoded JWKS document, by ``kid``.

    Raises ``JwksError`` when the document is not a key set or has no usable key; unusable entries
    are skipped with a debug log line naming the reason.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise JwksError('the JWKS is not a JSON object with a "keys" array')
    keys: dict[str, RSAPublicKey] = {}
    for index, jwk in enumerate(document["keys"]):
        if not isinstance(jwk, Mapping):
            log.debug("jwks.key_skipped", index=index, reason="not_an_object")
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            log.debug("jwks.key_skipped", index=index, reason="no_kid")
            continue
        if jwk.get("kty") != "RSA":
            log.debug("jwks.key_skipped", kid=kid, reason="kty_not_rsa", kty=jwk.get("kty"))
            continue
        if jwk.get("use", "sig") != "sig":
            log.debug("jwks.key_skipped", kid=kid, reason="use_not_sig", use=jwk.get("use"))
            continue
        if jwk.get("alg", "RS256") != "RS256":
            log.debug("jwks.key_skipped", kid=kid, reason="alg_not_rs256", alg=jwk.get("alg"))
            continue
        if kid in keys:
            # RFC 7517 §4.5: kids should be unique within a set; with two candidates we keep the first
            # rather than let the order of a later fetch decide silently.
            log.warning("jwks.duplicate_kid", kid=kid, kept="first")
            continue
        try:
            keys[kid] = _rsa_key(jwk)
        except ValueError as error:
            log.debug("jwks.key_skipped", kid=kid, reason="unusable_key", error=str(error))
    if not keys:
        raise JwksError("the JWKS has no usable RS256 signing key (kty RSA, use sig, >= 2048 bits)")
    return keys


def _redact(url: str) -> str:
    """The URL without user info, for messages (a JWKS URL could carry basic-auth credentials)."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def _file_path(url: str) -> Path:
    parts = urlsplit(url)
    if parts.netloc not in ("", "localhost"):
        raise JwksError(f"file:// JWKS URL must name a local path, not host {parts.netloc!r}")
    if not parts.path:
        raise JwksError("file:// JWKS URL has no path")
    return Path(unquote(parts.path))


def _read_limited(path: Path, limit: int) -> bytes:
    with path.open("rb") as handle:
        return handle.read(limit + 1)


class JwksCache:
    """``kid → RSAPublicKey`` from one configured JWKS URL, refreshed on demand and rate-limited."""

    def __init__(
        self,
        url: str,
        *,
        min_refresh_interval: float = 10.0,
        fetch_timeout: float = 5.0,
        session_factory: Callable[[], aiohttp.ClientSession] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        scheme = urlsplit(url).scheme.lower()
        # GHSA-993g-76c3-p5m4: a scheme allow-list, so no configured value can reach ftp:, data: etc.
        if scheme not in ("https", "http", "file"):
            raise JwksError(f"JWKS URL must be https://, http:// or file://, got {scheme or 'no'} scheme")
        if min_refresh_interval < 0:
            raise ValueError("min_refresh_interval must be >= 0")
        if fetch_timeout <= 0:
            raise ValueError("fetch_timeout must be > 0")
        self._url = url
        self._file = _file_path(url) if scheme == "file" else None
        self._min_refresh_interval = min_refresh_interval
        self._fetch_timeout = fetch_timeout
        self._session_factory = session_factory
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._keys: dict[str, RSAPublicKey] = {}
        self._last_attempt: float | None = None
        self._last_error: JwksError | None = None
        self._inflight: asyncio.Task[None] | None = None
        self._closed = False
        self.fetch_count = 0

    @property
    def url(self) -> str:
        return _redact(self._url)

    @property
    def kids(self) -> frozenset[str]:
        """The key ids currently cached."""
        return frozenset(self._keys)

    async def get_key(self, kid: str) -> RSAPublicKey:
        """The public key for ``kid``; refetches the JWKS once per refresh window if it is unknown.

        Raises ``AuthenticationError`` with reason ``unknown_key`` (the issuer does not publish that
        kid) or ``jwks_unavailable`` (the keys could not be fetched and the kid is not cached).
        """
        key = self._keys.get(kid)
        if key is not None:
            return key
        # A failed fetch was logged where it happened; it matters here only because kid is not cached.
        with contextlib.suppress(JwksError):
            await self._refresh(force=False)
        key = self._keys.get(kid)
        if key is not None:
            return key
        if self._last_error is not None:
            raise AuthenticationError(
                "The signature key could not be retrieved; try again later", reason="jwks_unavailable"
            )
        raise AuthenticationError("The signature key was not found", reason="unknown_key")

    async def refresh(self, force: bool = False) -> None:
        """Fetch the JWKS now if the refresh window allows it (or ``force``); raise ``JwksError`` on failure.

        Joins a fetch already in flight instead of starting a second one.
        """
        await self._refresh(force=force)

    async def hydrate(self) -> None:
        """Fetch the keys once at startup; an unavailable JWKS is logged, not raised.

        The service can start while the issuer is unreachable: tokens fail with ``jwks_unavailable``
        until a later fetch succeeds.
        """
        try:
            await self._refresh(force=True)
        except JwksError as error:
            log.warning("jwks.not_loaded_at_startup", url=self.url, error=str(error))

    async def close(self) -> None:
        """Cancel a fetch in flight and close the HTTP session this cache created."""
        self._closed = True
        task, self._inflight = self._inflight, None
        if task is not None and not task.done():
            task.cancel()
            # The task's outcome is irrelevant once we are closing; only wait for it to unwind.
            await asyncio.gather(task, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # --- internals ---------------------------------------------------------------------------

    def _may_fetch(self) -> bool:
        if self._last_attempt is None:
            return True
        return self._clock() - self._last_attempt >= self._min_refresh_interval

    async def _refresh(self, *, force: bool) -> None:
        if self._closed:
            raise JwksError("the JWKS cache is closed")
        task = self._inflight
        if task is None or task.done():
            if not force and not self._may_fetch():
                return
            # The attempt time is taken when the fetch starts, so a slow or failing fetch still counts
            # against the window: an outage must not turn into a fetch per request.
            self._last_attempt = self._clock()
            task = asyncio.get_running_loop().create_task(self._fetch_and_store())
            self._inflight = task
        # shield: one caller giving up (client gone, request cancelled) must not cancel the fetch the
        # other waiters share.
        await asyncio.shield(task)

    async def _fetch_and_store(self) -> None:
        self.fetch_count += 1
        try:
            async with asyncio.timeout(self._fetch_timeout):
                body = await self._fetch()
            try:
                document = json.loads(body)
            except (ValueError, RecursionError):
                raise JwksError("the JWKS response is not valid JSON") from None
            keys = parse_jwks(document)
        except TimeoutError:
            error = JwksError(f"fetching the JWKS from {self.url} timed out after {self._fetch_timeout:g} s")
            self._fail(error)
            raise error from None
        except JwksError as error:
            self._fail(error)
            raise
        added = keys.keys() - self._keys.keys()
        removed = self._keys.keys() - keys.keys()
        self._keys = keys
        self._last_error = None
        if added or removed:
            log.info("jwks.loaded", url=self.url, keys=len(keys), added=len(added), removed=len(removed))

    def _fail(self, error: JwksError) -> None:
        self._last_error = error
        # Keep whatever keys we had: a bad fetch says nothing about keys that verified yesterday.
        log.warning("jwks.refresh_failed", url=self.url, cachedKeys=len(self._keys), error=str(error))

    async def _fetch(self) -> bytes:
        if self._file is not None:
            try:
                data = await asyncio.to_thread(_read_limited, self._file, MAX_JWKS_BYTES)
            except OSError as error:
                raise JwksError(f"cannot read the JWKS file {self._file}: {error.strerror}") from error
        else:
            data = await self._fetch_http()
        if len(data) > MAX_JWKS_BYTES:
            raise JwksError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        return data

    async def _fetch_http(self) -> bytes:
        session = self._session
        if session is None or session.closed:
            session = (
                self._session_factory() if self._session_factory is not None else aiohttp.ClientSession()
            )
            self._session = session
        try:
            # No redirects: the key source is exactly the configured URL, nothing it points to.
            async with session.get(
                self._url,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self._fetch_timeout),
                headers={"Accept": "application/json"},
            ) as response:
                if response.status != 200:
                    raise JwksError(f"the JWKS endpoint {self.url} answered HTTP {response.status}")
                if (response.content_length or 0) > MAX_JWKS_BYTES:
                    raise JwksError(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
                body = bytearray()
                # Read in chunks and stop early: the size check must not require buffering a huge body.
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        break
                return bytes(body)
        except aiohttp.ClientError as error:
            raise JwksError(
                f"cannot fetch the JWKS from {self.url}: {type(error).__name__}: {error}"
            ) from error
