"""Fixtures for tests that drive a running service with real clients: `service` and `js`."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.jsclient import NodeDriver, node_driver
from tests.support.server import RunningService, hub_settings, running_service
from tests.support.tokens import TokenFactory


@pytest.fixture
async def service(token_factory: TokenFactory) -> AsyncIterator[RunningService]:
    async with running_service(hub_settings(token_factory)) as running:
        yield running


@pytest.fixture
async def js() -> AsyncIterator[NodeDriver]:
    async with node_driver() as driver:
        yield driver
