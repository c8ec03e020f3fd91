"""Command line: ``smartscheduler-realtime [serve]`` runs the service; ``dev-token`` mints a dev token.

Exit codes: 0 after a clean shutdown (SIGTERM/SIGINT), 2 for a configuration error (one line on
stderr naming the variable).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence

from config.settings import ConfigurationError, Settings, load_settings

__all__ = ["main"]

EXIT_CONFIG = 2


def _install_uvloop() -> bool:
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def serve(settings: Settings) -> int:
    import structlog

    from service.logs import configure_logging, trust_proxies
    from service.open_files import connection_budget, raise_soft_limit
    from service.serving import serve as serve_until_signalled

    configure_logging(settings.log_level, settings.log_format, buffer_records=settings.log_buffer_records)
    trust_proxies(settings.http_trusted_proxies)
    uvloop = _install_uvloop()
    log = structlog.get_logger("service")
    for doubt in settings.doubts():
        log.warning("config.doubtful", detail=doubt)
    files = raise_soft_limit()
    budget = connection_budget(settings.hub_max_connections, files)
    if budget < settings.hub_max_connections:
        log.warning(
            "process.open_files_below_max_connections",
            configured=settings.hub_max_connections,
            connections=budget,
            hard=files.hard,
            fix="raise the hard limit on open files (systemd LimitNOFILE=, docker --ulimit nofile=)",
        )
    log.info("process.open_files", before=files.before, soft=files.soft, hard=files.hard, connections=budget)
    settings = settings.model_copy(update={"hub_max_connections": budget})
    log.info(
        "service.starting",
        host=settings.http_host,
        port=settings.http_port,
        hub=settings.hub_path,
        instance=settings.instance_id,
        uvloop=uvloop,
        devAuth=settings.auth_dev_mode,
    )
    asyncio.run(serve_until_signalled(settings))
    log.info("service.stopped")
    return 0


def dev_token(settings: Settings, args: argparse.Namespace) -> int:
    """Print a development token that the service in AUTH_DEV_MODE accepts (and nothing else does)."""
    import uuid

    from service.auth import ClaimNames, DevIssuer
    from service.logs import configure_logging

    # Log lines (e.g. auth.dev_key_created) go to stderr: stdout carries only the token.
    configure_logging(settings.log_level, settings.log_format)
    if not settings.auth_dev_mode:
        print(
            "configuration error: AUTH_DEV_MODE: dev-token only works with AUTH_DEV_MODE=true "
            "(production tokens come from Cognito)",
            file=sys.stderr,
        )
        return EXIT_CONFIG
    claims = ClaimNames(
        groups=settings.auth_claim_groups,
        region=settings.auth_claim_region,
        contractor_id=settings.auth_claim_contractor_id,
    )
    issuer = DevIssuer(settings.auth_dev_key_dir, claims=claims)
    roles = {
        "dispatcher": [settings.auth_role_dispatcher],
        "contractor": [settings.auth_role_contractor],
        "admin": [settings.auth_role_admin],
    }[args.role]
    contractor_id = args.contractor_id
    if args.role == "contractor" and contractor_id is None:
        contractor_id = str(uuid.uuid4())
    token = issuer.mint(
        subject=args.subject or f"dev-{args.role}-{uuid.uuid4().hex[:8]}",
        roles=roles,
        regions=[r.strip() for r in args.region.split(",") if r.strip()] if args.region else (),
        contractor_id=contractor_id,
        token_use=args.token_use,
        ttl_seconds=args.ttl,
    )
    print(token)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartscheduler-realtime", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (default)")
    token = sub.add_parser("dev-token", help="mint a development token (AUTH_DEV_MODE=true only)")
    token.add_argument("--role", choices=["dispatcher", "contractor", "admin"], required=True)
    token.add_argument("--region", help="comma-separated regions (custom:region), e.g. north-america")
    token.add_argument(
        "--contractor-id", help="the contractor's UUID (custom:contractorId); random if omitted"
    )
    token.add_argument("--subject", help="the token's sub claim (random if omitted)")
    token.add_argument("--token-use", choices=["access", "id"], default="access")
    token.add_argument("--ttl", type=int, default=8 * 3600, help="lifetime in seconds (default 8 h)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command == "dev-token":
        return dev_token(settings, args)
    return serve(settings)
