"""DSL → spec → DSL and YAML → spec → YAML are lossless, and `flowc fmt` is idempotent: over every
file in pipelines/ and over hypothesis-generated specs that use every construct of the language."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from flow_strategies import pipelines
from hypothesis import HealthCheck, given, settings

from flowc.cli.main import main as flowc_main
from flowc.compile import load_spec
from flowc.spec.io import dump_json, dump_yaml, parse_yaml
from flowc.spec.models import Pipeline
from flowc.syntax.parser import parse_flow
from flowc.syntax.printer import print_flow
from flowc.testing.generators import deep_chain, synthetic_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted(p for p in (ROOT / "pipelines").iterdir() if p.suffix in (".flow", ".yaml"))


def assert_lossless(spec: Pipeline) -> None:
    """Both printers, read back, give the same canonical data; printing again gives the same text."""
    data = spec.dump()
    text = print_flow(spec)
    again = parse_flow(text, "printed.flow")
    assert again.dump() == data, text
    assert print_flow(again) == text
    yaml_text = dump_yaml(spec)
    from_yaml = parse_yaml(yaml_text, "printed.yaml")
    assert from_yaml.dump() == data, yaml_text
    assert dump_yaml(from_yaml) == yaml_text
    assert parse_yaml(dump_json(spec), "printed.json").dump() == data


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_pipeline_files_round_trip(path: Path) -> None:
    assert_lossless(load_spec(path))


def test_generated_specs_round_trip() -> None:
    assert_lossless(deep_chain(9))
    assert_lossless(synthetic_spec(120, 3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pipelines())
def test_any_spec_round_trips(spec: Pipeline) -> None:
    assert_lossless(spec)


@pytest.mark.parametrize("path", SPECS, ids=[p.name for p in SPECS])
def test_fmt_is_idempotent(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # copy the folder, since imports and corpora resolve relative to the spec
    work = tmp_path / "pipelines"
    shutil.copytree(path.parent, work, ignore=shutil.ignore_patterns("data"))
    target = work / path.name
    assert flowc_main(["fmt", "-w", "--drop-comments", str(target)]) == 0
    first = target.read_text(encoding="utf-8")
    assert flowc_main(["fmt", "--check", str(target)]) == 0
    assert flowc_main(["fmt", "-w", str(target)]) == 0
    assert target.read_text(encoding="utf-8") == first
    assert load_spec(target).dump() == load_spec(path).dump()
    other = "yaml" if path.suffix == ".flow" else "flow"
    assert flowc_main(["fmt", "--to", other, "-w", str(target)]) == 0
    converted = target.with_suffix("." + other)
    assert load_spec(converted).dump() == load_spec(path).dump()
    assert flowc_main(["fmt", "--check", str(converted)]) == 0
    capsys.readouterr()


FLOW_WITH_COMMENTS = """\
# what this pipeline is for
pipeline p {
  input q: str   # the question
  output a: str <- n.a

  # the only step; "# in a string" is not a comment
  node n: llm {
    prompt: \"\"\"
      # a heading inside a prompt is text
      {{q}}
      \"\"\"
    q <- q
    output a: str
  }
}
"""

YAML_WITH_COMMENTS = """\
# what this pipeline is for
pipeline: p
inputs: {q: {type: str}}  # the question
outputs: {a: {type: str, source: n.a}}
nodes:
  n:
    kind: llm
    prompt: |
      # a heading inside a prompt is text
      {{q}}
    inputs: {q: q}
    outputs: {a: str}
# trailing note
"""


@pytest.mark.parametrize(
    ("name", "text", "lines"), [("p.flow", FLOW_WITH_COMMENTS, "1, 3, 6"), ("p.yaml", YAML_WITH_COMMENTS, "1, 3, 13")]
)
def test_fmt_write_refuses_to_drop_comments(
    name: str, text: str, lines: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / name
    target.write_text(text, encoding="utf-8")
    before = load_spec(target).dump()
    assert flowc_main(["fmt", "-w", str(target)]) != 0
    err = capsys.readouterr().err
    assert "error[fmt-would-drop-comments]" in err and f"(lines {lines})" in err and "--drop-comments" in err
    assert target.read_text(encoding="utf-8") == text  # nothing written
    assert flowc_main(["fmt", str(target)]) == 0  # printing is harmless, with a note
    assert "comment(s) are not carried over" in capsys.readouterr().err
    assert flowc_main(["fmt", "-w", "--drop-comments", str(target)]) == 0
    assert load_spec(target).dump() == before
    assert "#" not in target.read_text(encoding="utf-8").replace("# a heading", "")
