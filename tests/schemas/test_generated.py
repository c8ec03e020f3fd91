"""The checked-in JSON Schema and TypeScript files are exactly what the models generate.

If this fails, run ``python -m schemas.generate`` and commit the result: the contract changed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from schemas.events import EVENT_MODELS, EVENT_TYPES
from schemas.generate import OUTPUT_DIR, TS_FILE, main, render_all, stale_files

ROOT = Path(__file__).resolve().parents[2]


def test_generated_files_are_up_to_date() -> None:
    stale = stale_files()
    assert stale == [], f"stale generated files {stale}: run `python -m schemas.generate` and commit them"


def test_check_mode_exits_non_zero_when_a_file_is_stale(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", "--out", str(tmp_path)]) == 0
    (tmp_path / TS_FILE).write_text("// edited by hand\n")
    assert main(["--check", "--out", str(tmp_path)]) == 1
    (tmp_path / TS_FILE).unlink()
    assert main(["--check", "--out", str(tmp_path)]) == 1


def test_module_entry_point_checks_the_repository_files() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "schemas.generate", "--check"], cwd=ROOT, capture_output=True, check=False
    )
    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("model", EVENT_MODELS, ids=lambda model: model.__name__)
def test_json_schema_matches_the_model(model: type) -> None:
    schema = json.loads((OUTPUT_DIR / f"{model.schema_id}.schema.json").read_text())  # type: ignore[attr-defined]
    aliases = [field.alias or name for name, field in model.model_fields.items()]  # type: ignore[attr-defined]
    assert schema["title"] == model.__name__
    assert list(schema["properties"]) == aliases
    assert schema["required"] == aliases
    assert schema["additionalProperties"] is True
    assert schema["properties"]["type"]["const"] == model.__name__
    for spec in schema["properties"].values():
        if "pattern" in spec:
            re.compile(spec["pattern"])


def test_typescript_declares_every_payload_and_hub_method() -> None:
    ts = render_all()[TS_FILE]
    assert f"export type HubMethodName = {' | '.join(json.dumps(t) for t in EVENT_TYPES)};" in ts
    for model in EVENT_MODELS:
        assert f"export interface {model.__name__} {{" in ts
        for name, field in model.model_fields.items():
            assert f"readonly {field.alias or name}: " in ts
    assert 'readonly source: "auto" | "manual";' in ts
    assert "readonly configVersion: number;" in ts
