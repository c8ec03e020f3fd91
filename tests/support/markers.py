"""What a test needs outside Python, as markers: ``make unit`` runs exactly the tests that need none.

- ``broker``: a real RabbitMQ. Added automatically to tests using the broker fixtures
  (``tests.support.broker_fixtures``).
- ``node``: Node.js and ``tests/js/node_modules``. Added automatically to tests using the ``js``
  fixture; tests starting a ``NodeDriver`` themselves carry it explicitly.
- ``browser``: Chromium and Playwright.
- ``tools``: a Debian tool the tests run (``nginx``, ``docker-compose``; ``tests.support.tools``).

``make unit`` is ``pytest -m "not broker and not node and not browser and not tools"``. So that it
stays honest, the helpers that find Node or a tool call ``require_marker``: a test that reaches them
without its marker fails in every run (``make test`` included), saying which marker to add.

Registered as a plugin in ``tests/conftest.py``.
"""

from __future__ import annotations

import pytest

__all__ = ["require_marker"]

# Fixtures whose users need Node.js (hub_fixtures.js starts the official JS client).
_NODE_FIXTURES = {"js"}

_current: pytest.Item | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if set(getattr(item, "fixturenames", ())) & _NODE_FIXTURES:
            item.add_marker(pytest.mark.node)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    global _current
    _current = item


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    global _current
    _current = None


def require_marker(marker: str, needs: str) -> None:
    """Fail the running test unless it is marked ``marker`` (outside a test run: do nothing)."""
    if _current is not None and _current.get_closest_marker(marker) is None:
        pytest.fail(
            f"{_current.nodeid} needs {needs} but is not marked `{marker}`: add "
            f"@pytest.mark.{marker} (or pytestmark), so that `make unit` leaves it out",
            pytrace=False,
        )
