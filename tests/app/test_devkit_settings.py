"""``make run`` takes its settings as the service does: the environment first, then the env file."""

from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import env_file_values
from devkit.run import DEV_CONTRACTOR_ID, _file_values, _setting


def test_the_env_file_counts_under_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file = tmp_path / "my.env"
    env_file.write_text("HTTP_PORT=5999\nlog_format=json\nINSTANCE_ID=\n")
    monkeypatch.setenv("CONFIG_FILE", str(env_file))
    monkeypatch.delenv("HTTP_PORT", raising=False)
    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.delenv("INSTANCE_ID", raising=False)
    _file_values.cache_clear()  # make run reads the file once; this test changes which file
    assert env_file_values() == {"HTTP_PORT": "5999", "LOG_FORMAT": "json", "INSTANCE_ID": ""}
    assert _setting("HTTP_PORT", "5004") == "5999"
    assert _setting("LOG_FORMAT", "console") == "json"
    assert _setting("INSTANCE_ID", "dev") == "dev"  # empty means unset
    monkeypatch.setenv("HTTP_PORT", "6000")
    assert _setting("HTTP_PORT", "5004") == "6000"


def test_the_printed_contractor_token_is_the_one_the_readme_publishes_to() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"--contractor-id {DEV_CONTRACTOR_ID}" in readme
