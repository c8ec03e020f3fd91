"""The README stays true to the code it documents."""

from __future__ import annotations

import re
from pathlib import Path

from config.settings import Settings

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_setting_is_in_the_readme_configuration_table() -> None:
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", README))
    missing = sorted(name.upper() for name in Settings.model_fields if name.upper() not in documented)
    assert missing == [], f"settings missing from README.md's configuration table: {missing}"


def test_readme_gives_the_two_newcomer_commands() -> None:
    assert "make run" in README
    assert "make test" in README
