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


def test_yaml_1_1_booleans_octals_and_sexagesimals_are_text() -> None:
    """YAML 1.2 core schema: `yes`/`no`/`on`/`off` are text (PyYAML's 1.1 resolver made them booleans),
    `0777` is 777, `1:30` is text; only true/false are booleans."""
    spec = parse_yaml(
        """pipeline: a
inputs:
  flag: {type: bool, default: true}
  word: {type: str, default: no}
  mode: {type: "enum[on, off]", default: off}
  count: {type: int, default: 0777}
  time: {type: str, default: 1:30}
nodes:
  a:
    kind: llm
    prompt: x
    demos: [{answer: yes}, {answer: n}]
""",
        "a.yaml",
    )
    defaults = {k: v.default for k, v in spec.inputs.items()}
    assert defaults == {"flag": True, "word": "no", "mode": "off", "count": 777, "time": "1:30"}
    assert spec.nodes["a"].demos == [{"answer": "yes"}, {"answer": "n"}]  # type: ignore[union-attr]
    text = dump_yaml(spec)
    assert "default: 'no'" in text  # quoted, so YAML 1.1 tools read it as text too
    assert parse_yaml(text, "b.yaml").dump() == spec.dump()
