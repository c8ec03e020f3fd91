"""Shared pytest wiring: fixture plugins live in ``tests/support`` so that each concern keeps one room."""

pytest_plugins = [
    "tests.support.broker_fixtures",
]
