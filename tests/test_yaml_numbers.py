"""Numbers without a dot (1e+30) are floats in JSON and YAML 1.2; PyYAML's 1.1 resolver reads them as
text. flowc's loader and dumper agree with JSON, so specs mean the same however they are written."""

from flowc.spec.io import dump_json, dump_yaml, parse_yaml

YAML = """pipeline: a
inputs:
  big: {type: float, default: 1e+30}
  text: {type: str, default: "1e3"}
nodes:
  a: {kind: llm, prompt: x}
"""


def test_exponent_floats_and_numeric_looking_text() -> None:
    spec = parse_yaml(YAML, "a.yaml")
    assert spec.inputs["big"].default == 1e30
    assert spec.inputs["text"].default == "1e3"
    assert parse_yaml(dump_yaml(spec), "b.yaml").dump() == spec.dump()
    assert parse_yaml(dump_json(spec), "b.json").dump() == spec.dump()
