"""Builds the auth components from ``Settings``: the one place that reads the ``auth_*`` settings.

Rule: building is pure (no I/O, no event loop), so the app has its validator and policy from the
moment it is created; loading — the JWKS download and, in development, the signing key — happens in
``AuthComponents.start`` at startup, before the app serves a request.

Production and development differ only in where keys come from. In development
(``AUTH_DEV_MODE=true``) a ``DevIssuer`` writes its JWKS to ``<key_dir>/jwks.json`` and the very same
``JwksCache``/``TokenValidator`` read it through ``file://``; the mode is announced with a warning at
startup so it cannot be on by accident unnoticed.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from config.settings import Settings
from service.auth.dev import DEV_AUDIENCE, DEV_ISSUER, DevKeys
from service.auth.jwks import JwksCache
from service.auth.policy import GroupPolicy, Roles
from service.auth.tickets import ConnectionTickets
from service.auth.tokens import ClaimNames, TokenValidator

__all__ = ["AuthComponents", "build_auth"]

log = structlog.get_logger(__name__)

VERIFIED_TOKEN_CACHE_SIZE = 4096  # tokens, each kept until it expires or falls out (LRU)


@dataclass(frozen=True, slots=True)
class AuthComponents:
    """What the transports and the hub need: a validator, the group policy, connection tickets (None when
    ``AUTH_CONNECTION_TICKETS`` is off) and (dev only) the dev keys."""

    jwks: JwksCache
    validator: TokenValidator
    policy: GroupPolicy
    dev_keys: DevKeys | None = None
    tickets: ConnectionTickets | None = None

    async def start(self) -> None:
        """Load the keys: the dev key first (it writes the JWKS), then the JWKS (an outage is logged)."""
        dev_keys = self.dev_keys
        if dev_keys is not None:
            # Key generation and file I/O block; keep them off the event loop.
            issuer = await asyncio.to_thread(dev_keys.load)
            log.warning(
                "auth.dev_mode_on",
                keyPath=str(issuer.key_path),
                issuer=issuer.issuer,
                note="tokens are signed by the local development key; AUTH_JWKS_URL, AUTH_ISSUER and "
                "AUTH_AUDIENCE are ignored. Never enable AUTH_DEV_MODE in production.",
            )
        await self.jwks.hydrate()

    async def close(self) -> None:
        await self.jwks.close()


def build_auth(settings: Settings) -> AuthComponents:
    """The auth components for ``settings``, not loaded yet (``await start()`` before validating)."""
    claim_names = ClaimNames(
        groups=settings.auth_claim_groups,
        region=settings.auth_claim_region,
        contractor_id=settings.auth_claim_contractor_id,
    )
    dev_keys: DevKeys | None = None
    if settings.auth_dev_mode:
        dev_keys = DevKeys(settings.auth_dev_key_dir, claims=claim_names)
        jwks_url, issuer, audience = dev_keys.jwks_url, DEV_ISSUER, DEV_AUDIENCE
    else:
        # Settings' validator guarantees these are set when dev mode is off; re-check for a clear error.
        if not (settings.auth_jwks_url and settings.auth_issuer and settings.auth_audience):
            raise ValueError("AUTH_JWKS_URL, AUTH_ISSUER and AUTH_AUDIENCE are required")
        jwks_url, issuer, audience = settings.auth_jwks_url, settings.auth_issuer, settings.auth_audience

    jwks = JwksCache(
        jwks_url,
        min_refresh_interval=settings.auth_jwks_min_refresh_seconds,
        fetch_timeout=settings.auth_jwks_fetch_timeout_seconds,
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
    policy = GroupPolicy(
        Roles(
            dispatcher=settings.auth_role_dispatcher,
            contractor=settings.auth_role_contractor,
            admin=settings.auth_role_admin,
        ),
        settings.auth_claim_region,
        groups_claim=settings.auth_claim_groups,
        contractor_id_claim=settings.auth_claim_contractor_id,
    )
    tickets = (
        ConnectionTickets(leeway=settings.auth_leeway_seconds) if settings.auth_connection_tickets else None
    )
    return AuthComponents(jwks=jwks, validator=validator, policy=policy, dev_keys=dev_keys, tickets=tickets)
