"""The tests' logging: the service's, with structlog's events through the standard library, so that
pytest's ``caplog`` sees them. Tests that configure logging their own way put this back after."""

from __future__ import annotations

from config.settings import LogFormat
from service.logs import configure_logging

__all__ = ["configure_session_logging"]


def configure_session_logging() -> None:
    configure_logging("DEBUG", LogFormat.CONSOLE, through_stdlib=True)
