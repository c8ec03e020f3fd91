"""System tools the tests run (Debian packages): found, or a failure that says what to install.

Rule: under ``CI=true`` a missing tool fails the run with the package to install; elsewhere it skips
with the same message (shown by ``-ra``), so a laptop without nginx can still run the rest. A test
that runs a tool is marked ``tools`` (checked here), so ``make unit`` never selects it.
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.support.markers import require_marker

__all__ = ["require_tool"]


def require_tool(name: str, package: str, *candidates: str) -> str:
    """The path of ``name`` (on PATH or one of ``candidates``); fail under CI, else skip, if missing."""
    require_marker("tools", name)
    found = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if found is not None:
        return found
    message = f"{name} not found: install Debian's package with `sudo apt-get install -y {package}`"
    if os.environ.get("CI") == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)
