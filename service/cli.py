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
        import uvloop  # noqa: PLC0415 - optional accelerator
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def serve(settings: Settings) -> int:
    import structlog  # noqa: PLC0415 - keep `--help` and config errors fast
    from aiohttp import web  # noqa: PLC0415

    from service.app import create_app  # noqa: PLC0415
    from service.logs import RedactingAccessLogger, configure_logging  # noqa: PLC0415

    configure_logging(settings.log_level, settings.log_format)
    uvloop = _install_uvloop()
    log = structlog.get_logger("service")
    log.info(
        "service.starting",
        host=settings.http_host,
        port=settings.http_port,
        hub=settings.hub_path,
        instance=settings.instance_id,
        uvloop=uvloop,
        devAuth=settings.auth_dev_mode,
    )
    web.run_app(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        access_log_class=RedactingAccessLogger,
        handler_cancellation=True,
        shutdown_timeout=settings.shutdown_timeout_seconds,
        print=None,
    )
    log.info("service.stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="smartscheduler-realtime", description=__doc__)
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the service (default)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    if args.command in (None, "serve"):
        return serve(settings)
    parser.error(f"unknown command {args.command}")
    return EXIT_CONFIG
