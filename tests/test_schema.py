"""`flowc schema`: the JSON Schema editors use for YAML specs describes every field (hover text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from flowc.cli.main import main
from flowc.spec.schema import json_schema

ROOT = Path(__file__).resolve().parents[1]


def _schema(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    assert main(["schema"]) == 0
    schema: dict[str, Any] = json.loads(capsys.readouterr().out)
    return schema


def test_every_field_has_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    schema = _schema(capsys)
    models = {"Pipeline": schema, **schema["$defs"]}
    missing = [
        f"{model}.{field}"
        for model, body in models.items()
        for field, prop in body.get("properties", {}).items()
        if not prop.get("description")
    ]
    assert not missing, f"fields without a description (write a docstring under the field): {missing}"
    assert len(schema["$defs"]) >= 10


def test_the_shipped_yaml_specs_validate(capsys: pytest.CaptureFixture[str]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = _schema(capsys)
    specs = sorted((ROOT / "pipelines").glob("*.yaml"))
    assert specs
    for path in specs:
        jsonschema.validate(yaml.safe_load(path.read_text(encoding="utf-8")), schema)
    assert json_schema()["properties"]["pipeline"]["description"]
