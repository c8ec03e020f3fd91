"""Shared pytest wiring: fixture plugins live in ``tests/support`` so that each concern keeps one room."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from tests.support.session_logging import configure_session_logging

pytest_plugins = [
    "tests.support.markers",
    "tests.support.broker_fixtures",
    "tests.support.tokens",
    "tests.support.hub_fixtures",
]


@pytest.fixture(scope="session", autouse=True)
def _service_logging() -> Iterator[None]:
    """Route the service's structlog events through stdlib logging, so ``caplog`` sees them; at the
    end, the log writer's last lines go where pytest captures them, not after its summary."""
    configure_session_logging()
    yield
    for handler in logging.getLogger().handlers:
        handler.close()
