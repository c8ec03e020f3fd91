"""Settings that are valid alone but break the official clients at their defaults start with a
``config.doubtful`` warning naming the setting and the fix; the defaults raise none."""

from __future__ import annotations

import pytest

from config.settings import Settings


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, auth_dev_mode=True, **values)  # type: ignore[arg-type]


def test_the_defaults_raise_no_doubt() -> None:
    assert _settings().doubts() == []


@pytest.mark.parametrize(
    ("values", "setting"),
    [
        ({"hub_keep_alive_interval": 60.0}, "HUB_KEEP_ALIVE_INTERVAL"),
        ({"hub_client_timeout_interval": 5.0}, "HUB_CLIENT_TIMEOUT_INTERVAL"),
        ({"hub_long_polling_timeout": 600.0}, "HUB_LONG_POLLING_TIMEOUT"),
    ],
)
def test_a_setting_the_official_clients_cannot_live_with_is_named(
    values: dict[str, object], setting: str
) -> None:
    (doubt,) = _settings(**values).doubts()
    assert doubt.startswith(f"{setting}=")
