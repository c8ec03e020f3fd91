"""Shared pytest wiring: fixture plugins live in ``tests/support`` so that each concern keeps one room."""

from __future__ import annotations

import pytest

from config.settings import LogFormat
from service.logs import configure_logging

pytest_plugins = [
    "tests.support.markers",
    "tests.support.broker_fixtures",
    "tests.support.tokens",
    "tests.support.hub_fixtures",
]


@pytest.fixture(scope="session", autouse=True)
def _service_logging() -> None:
    """Route the service's structlog events through stdlib logging, so ``caplog`` sees them."""
    configure_logging("DEBUG", LogFormat.CONSOLE)
