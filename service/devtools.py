"""Development-only HTTP routes: the dev JWKS, dev tokens, and the dispatcher console.

Rule: these routes exist only when ``AUTH_DEV_MODE=true`` — ``create_app`` calls
``install_dev_routes`` in that mode and never otherwise, so in production ``/dev/*`` and ``/console/``
are plain 404s (there is no flag to check at request time, hence nothing to get wrong). Tokens come
from the same ``DevIssuer`` as ``smartscheduler-realtime dev-token`` and pass the same validator as
every other token; nothing here weakens what the hub checks.

Routes:

- ``GET /dev/jwks.json``: the public keys that verify dev tokens.
- ``GET /dev/token?role=dispatcher&region=north-america`` (comma-separated regions),
  ``?role=contractor&contractorId=<uuid>`` (random when omitted), ``?role=admin``; optional ``ttl``
  seconds. Answers ``{"token", "expiresAt", "subject", "role", "regions", "contractorId"}``.
- ``GET /console/``: the dispatcher console (``static/console``) with the vendored official SignalR
  browser bundles under ``/console/vendor/`` (``static/vendor``; no CDN).
- ``GET /``: redirects to the console.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from aiohttp import hdrs, web

from config.settings import Settings
from schemas import InvalidGroupKeyError, canonical_uuid, normalize_region
from service.auth import DevKeys

__all__ = ["CONSOLE_PATH", "STATIC_DIR", "install_dev_routes"]

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
CONSOLE_PATH: Final = "/console/"
MIN_TTL_SECONDS: Final = 60
MAX_TTL_SECONDS: Final = 24 * 3600
DEFAULT_TTL_SECONDS: Final = 8 * 3600  # as `smartscheduler-realtime dev-token`
_MAX_REGIONS: Final = 16
# The console is same-origin only: its scripts, styles and the hub. 'self' covers ws:/wss: to the same
# host (CSP Level 3), so every transport works and a CDN script could not load even by mistake.
_CONSOLE_CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_NO_STORE: Final = {hdrs.CACHE_CONTROL: "no-store"}


def install_dev_routes(app: web.Application, settings: Settings, keys: DevKeys) -> None:
    """Add the development routes to ``app`` (call only in development auth mode).

    ``keys`` is the app's development issuer; the app loads it at startup, before any request.
    """
    routes = _DevRoutes(settings, keys)
    app.router.add_get("/", routes.root)
    app.router.add_get("/dev/jwks.json", routes.jwks)
    app.router.add_get("/dev/token", routes.token)
    app.router.add_get("/console", routes.root)
    app.router.add_get(CONSOLE_PATH, routes.console)
    # The more specific prefix first, so /console/vendor/* is never looked up in static/console.
    app.router.add_static("/console/vendor", STATIC_DIR / "vendor")
    app.router.add_static("/console", STATIC_DIR / "console")


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


class _DevRoutes:
    def __init__(self, settings: Settings, keys: DevKeys) -> None:
        self._settings = settings
        self._keys = keys

    async def root(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(CONSOLE_PATH)

    async def console(self, request: web.Request) -> web.StreamResponse:
        headers = {"Content-Security-Policy": _CONSOLE_CSP, hdrs.CACHE_CONTROL: "no-cache"}
        return web.FileResponse(STATIC_DIR / "console" / "index.html", headers=headers)

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self._keys.issuer.jwks(), headers={hdrs.CACHE_CONTROL: "max-age=60"})

    async def token(self, request: web.Request) -> web.Response:
        issuer = self._keys.issuer
        settings = self._settings
        query = request.query
        role = query.get("role", "")
        ttl = _ttl(query.get("ttl"))
        regions = _regions(query.get("region", ""))
        contractor_id: str | None = None
        if role == "dispatcher":
            if not regions:
                raise _bad_request("region is required for role=dispatcher, e.g. region=north-america")
            roles = [settings.auth_role_dispatcher]
        elif role == "contractor":
            raw = query.get("contractorId") or str(uuid.uuid4())
            contractor_id = canonical_uuid(raw.strip())
            if contractor_id is None:
                raise _bad_request("contractorId must be a UUID")
            roles = [settings.auth_role_contractor]
        elif role == "admin":
            roles = [settings.auth_role_admin]
        else:
            raise _bad_request("role must be dispatcher, contractor or admin")
        subject = f"dev-{role}-{uuid.uuid4().hex[:8]}"
        claims = issuer.claims(
            subject=subject, roles=roles, regions=regions, contractor_id=contractor_id, ttl_seconds=ttl
        )
        body = {
            "token": issuer.sign(claims),
            "expiresAt": datetime.fromtimestamp(claims["exp"], UTC).isoformat().replace("+00:00", "Z"),
            "subject": subject,
            "role": role,
            "regions": regions,
            "contractorId": contractor_id,
        }
        return web.json_response(body, headers=_NO_STORE)


def _ttl(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_TTL_SECONDS
    try:
        ttl = int(raw)
    except ValueError:
        raise _bad_request("ttl must be a number of seconds") from None
    if not MIN_TTL_SECONDS <= ttl <= MAX_TTL_SECONDS:
        raise _bad_request(f"ttl must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS} seconds")
    return ttl


def _regions(raw: str) -> list[str]:
    parts = [part.strip() for part in raw.split(",") if part.strip()]
    if len(parts) > _MAX_REGIONS:
        raise _bad_request(f"at most {_MAX_REGIONS} regions")
    try:
        return [normalize_region(part) for part in parts]
    except InvalidGroupKeyError:
        raise _bad_request("region must be letters, digits and single hyphens, e.g. north-america") from None
