"""docs/language.md stays true: its examples parse, whole pipelines compile without errors, and
each YAML example that follows a `.flow` example says the same thing.

Blocks: ```flow (a whole pipeline: must compile), ```yaml (a whole pipeline: must compile),
```flow-fragment (statements of a pipeline: must parse inside `pipeline doc { ... }`),
```yaml-fragment and others (not checked)."""

from __future__ import annotations

import itertools
import re
import shutil
from pathlib import Path

import pytest

import flowc
from flowc.spec.io import parse_yaml
from flowc.syntax.parser import parse_flow

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "language.md"
_BLOCK = re.compile(r"^```([\w-]+)\n(.*?)^```$", re.S | re.M)


def blocks() -> list[tuple[int, str, str]]:
    text = DOC.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start()) + 1, m.group(1), m.group(2)) for m in _BLOCK.finditer(text)]


BLOCKS = blocks()
WHOLE = [(line, lang, body) for line, lang, body in BLOCKS if lang in ("flow", "yaml")]
FRAGMENTS = [(line, body) for line, lang, body in BLOCKS if lang == "flow-fragment"]


def test_doc_has_examples() -> None:
    assert len([b for b in WHOLE if b[1] == "flow"]) >= 6
    assert len(FRAGMENTS) >= 10


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder holding the example pipelines, so a doc example can import `rag_step.flow`."""
    for p in (ROOT / "pipelines").glob("*.flow"):
        shutil.copy(p, tmp_path / p.name)
    shutil.copytree(ROOT / "pipelines" / "data", tmp_path / "data")  # the corpora the examples declare
    return tmp_path


@pytest.mark.parametrize(("line", "lang", "body"), WHOLE, ids=[f"{b[1]}@{b[0]}" for b in WHOLE])
def test_whole_pipeline_compiles(line: int, lang: str, body: str, workdir: Path) -> None:
    path = workdir / f"doc_example_{line}.{lang}"
    path.write_text(body, encoding="utf-8")
    compiled = flowc.compile(path)
    assert not [d for d in compiled.diagnostics if d.severity == "error"]


@pytest.mark.parametrize(("line", "body"), FRAGMENTS, ids=[f"fragment@{b[0]}" for b in FRAGMENTS])
def test_fragment_parses(line: int, body: str) -> None:
    indented = "".join("  " + ln if ln.strip() else ln for ln in body.splitlines(keepends=True))
    parse_flow("pipeline doc {\n" + indented + "}\n", f"docs/language.md@{line}")


def test_yaml_examples_match_the_flow_before_them() -> None:
    pairs = 0
    for (_l1, a, flow_text), (l2, b, yaml_text) in itertools.pairwise(WHOLE):
        if a == "flow" and b == "yaml":
            assert parse_yaml(yaml_text, f"docs/language.md@{l2}").dump() == parse_flow(flow_text).dump()
            pairs += 1
    assert pairs == len([b for b in WHOLE if b[1] == "flow"]), "every .flow example has its YAML twin"


def test_links_to_error_codes_exist() -> None:
    from flowc.errors import ERROR_CODES

    linked = set(re.findall(r"errors\.md#([a-z-]+)", DOC.read_text(encoding="utf-8")))
    assert linked and linked <= set(ERROR_CODES), linked - set(ERROR_CODES)


def test_metric_names_and_limits_are_current() -> None:
    from flowc.spec import io
    from flowc.spec.models import METRIC_NAMES
    from flowc.syntax import parser

    text = DOC.read_text(encoding="utf-8")
    metrics = text[text.index("## Metrics") : text.index("## Tests")]
    assert set(re.findall(r"`([a-z_0-9]+)`", metrics.split("Known functions:")[1].split("(")[0])) == set(METRIC_NAMES)
    limits = text[text.index("## Limits") :]
    for n in (parser.MAX_BYTES, io.MAX_BYTES, io.MAX_NODES):
        assert f"{n:,}" in limits
    assert f"{parser.MAX_DEPTH} levels" in limits and f"{io.MAX_DEPTH} levels" in limits
