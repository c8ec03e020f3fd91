"""Builds the auth components from ``Settings``: the one place that reads the ``auth_*`` settings.

Rule: production and development differ only in where keys come from. In development
(``AUTH_DEV_MODE=true``) a ``DevIssuer`` writes its JWKS to ``<key_dir>/jwks.json`` and the very same
``JwksCache``/``TokenValidator`` read it through ``file://``; the mode is announced with a warning at
startup so it cannot be on by accident unnoticed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp

from config.settings import Settings
from service.auth.dev import DEV_AUDIENCE, DEV_ISSUER, DevIssuer
from service.auth.jwks import JwksCache
from service.auth.policy import GroupPolicy, Roles
from service.auth.tokens import ClaimNames, TokenValidator

__all__ = ["AuthComponents", "create_auth", "create_policy"]

logger = logging.getLogger(__name__)

DEV_JWKS_FILE_NAME = "jwks.json"
VERIFIED_TOKEN_CACHE_SIZE = 4096  # tokens, each kept until it expires or falls out (LRU)


@dataclass(frozen=True, slots=True)
class AuthComponents:
    """What the transports and the hub need: a validator, the group policy, and (dev only) the issuer."""

    jwks: JwksCache
    validator: TokenValidator
    policy: GroupPolicy
    dev_issuer: DevIssuer | None = None

    async def close(self) -> None:
        await self.jwks.close()


async def create_auth(
    settings: Settings, *, session_factory: Callable[[], aiohttp.ClientSession] | None = None
) -> AuthComponents:
    """Build and hydrate the auth components (fetches the JWKS once; an outage is logged, not raised)."""
    claim_names = ClaimNames(
        groups=settings.auth_claim_groups,
        region=settings.auth_claim_region,
        contractor_id=settings.auth_claim_contractor_id,
    )
    dev_issuer: DevIssuer | None = None
    if settings.auth_dev_mode:
        key_dir = settings.auth_dev_key_dir
        # Key generation and file I/O block; keep them off the event loop.
        dev_issuer = await asyncio.to_thread(DevIssuer, key_dir, claims=claim_names)
        jwks_path = (key_dir / DEV_JWKS_FILE_NAME).resolve()
        await asyncio.to_thread(dev_issuer.write_jwks, jwks_path)
        jwks_url, issuer, audience = jwks_path.as_uri(), DEV_ISSUER, DEV_AUDIENCE
        logger.warning(
            "AUTH_DEV_MODE is ON: tokens are signed by the local development key %s (issuer %s); "
            "AUTH_JWKS_URL/AUTH_ISSUER/AUTH_AUDIENCE are ignored. Never enable this in production.",
            dev_issuer.key_path,
            issuer,
        )
    else:
        # Settings' validator guarantees these are set when dev mode is off; re-check for a clear error.
        if not (settings.auth_jwks_url and settings.auth_issuer and settings.auth_audience):
            raise ValueError("AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE are required")
        jwks_url, issuer, audience = settings.auth_jwks_url, settings.auth_issuer, settings.auth_audience

    jwks = JwksCache(
        jwks_url,
        min_refresh_interval=settings.auth_jwks_min_refresh_seconds,
        fetch_timeout=settings.auth_jwks_fetch_timeout_seconds,
        session_factory=session_factory,
    )
    validator = TokenValidator(
        jwks,
        issuer=issuer,
        audience=audience,
        leeway=settings.auth_leeway_seconds,
        claims=claim_names,
        retain_claims=False,
        cache_size=VERIFIED_TOKEN_CACHE_SIZE,
    )
    await jwks.hydrate()
    policy = create_policy(settings)
    return AuthComponents(jwks=jwks, validator=validator, policy=policy, dev_issuer=dev_issuer)


def create_policy(settings: Settings) -> GroupPolicy:
    """The group policy: role names and claim names from the settings (no I/O)."""
    return GroupPolicy(
        Roles(
            dispatcher=settings.auth_role_dispatcher,
            contractor=settings.auth_role_contractor,
            admin=settings.auth_role_admin,
        ),
        settings.auth_claim_region,
        groups_claim=settings.auth_claim_groups,
        contractor_id_claim=settings.auth_claim_contractor_id,
    )
