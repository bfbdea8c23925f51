"""Fuzzing the front ends: random text and mutated valid specs through `parse_flow`, `parse_yaml`
and `flowc.compile` never raise anything but SpecErrors/FlowcError, and every diagnostic points
inside the file; pathological input (deep nesting, huge files, YAML alias bombs) fails fast."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from flow_strategies import pipelines
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import flowc
from flowc.errors import Diagnostic, FlowcError, SpecErrors
from flowc.spec.io import dump_yaml, parse_yaml
from flowc.spec.models import Pipeline
from flowc.syntax.parser import parse_flow
from flowc.syntax.printer import print_flow

ROOT = Path(__file__).resolve().parents[1]
SEEDS = {p.name: p.read_text(encoding="utf-8") for p in sorted((ROOT / "pipelines").iterdir()) if p.is_file()}
FLOW_SEEDS = [t for n, t in SEEDS.items() if n.endswith(".flow")]
YAML_SEEDS = [t for n, t in SEEDS.items() if n.endswith(".yaml")]

FUZZ = settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def check_diagnostic(d: Diagnostic, text: str, path: str) -> None:
    assert d.span is not None, f"no place given for: {d.render()}"
    if d.span.path != path:  # a diagnostic about an imported file
        return
    # Lines as lark counts them ("\n") or as YAML and str.splitlines do (also "\r", "\x85",
    # "\u2028", ...): the front ends differ on the rarer line breaks, so accept either numbering.
    by_nl, by_any = text.split("\n"), text.splitlines() or [""]
    assert 1 <= d.span.line <= max(len(by_nl), len(by_any)), (d.render(), len(by_nl), len(by_any))
    widths = [len(ls[d.span.line - 1]) for ls in (by_nl, by_any) if d.span.line <= len(ls)]
    assert 1 <= d.span.column <= max(widths) + 1, (d.render(), widths)


def diagnostics_of(fn: Callable[[], object], text: str, path: str) -> list[Diagnostic]:
    """Run `fn`; it may succeed or fail with our errors only, each of which points into `text`."""
    try:
        result = fn()
    except SpecErrors as e:
        assert e.diagnostics, "SpecErrors without a diagnostic"
        for d in e.diagnostics:
            check_diagnostic(d, text, path)
        e.render()  # rendering with excerpts never fails
        return e.diagnostics
    except FlowcError as e:
        return [e.diagnostic]
    if isinstance(result, flowc.CompiledPipeline):
        for d in result.diagnostics:
            check_diagnostic(d, text, path)
        return list(result.diagnostics)
    return []


def through_everything(text: str, kind: str) -> None:
    path = f"fuzz.{kind}"
    parse = parse_flow if kind == "flow" else parse_yaml
    spec: list[Pipeline] = []

    def parsed() -> Pipeline:
        spec.append(parse(text, path))
        return spec[-1]

    diagnostics_of(parsed, text, path)
    if spec:
        diagnostics_of(lambda: flowc.compile(spec[0]), text, path)
    if kind == "flow" and "\n" in text:
        diagnostics_of(lambda: flowc.compile(text), text, "<string>")


# -- random text ---------------------------------------------------------------------------------

_TOKENS = [
    "pipeline",
    "p",
    "{",
    "}",
    "[",
    "]",
    "(",
    ")",
    ":",
    ",",
    "<-",
    "->",
    "??",
    "=",
    "?",
    "node",
    "llm",
    "map",
    "do",
    "input",
    "output",
    "loop",
    "max",
    "while",
    "all",
    "route[a, b]",
    '"',
    '"""',
    "\\",
    "#",
    "\n",
    "\r\n",
    "\t",
    " ",
    "  ",
    "- ",
    "&a",
    "*a",
    "!!python/object",
    "%YAML",
    "---",
    "{{x}}",
    "é",
    "\x00",
    "\ufeff",
    "1e999",
    "-0",
]
token_soup = st.lists(st.sampled_from(_TOKENS) | st.text(max_size=3), max_size=60).map("".join)


@FUZZ
@given(st.one_of(st.text(max_size=200), token_soup), st.sampled_from(["flow", "yaml"]))
@example("=", "yaml")  # PyYAML resolves a lone "=" to a tag it cannot construct (found by this test)
@example("pipeline: p\ndescription: !foo x\n", "yaml")
@example("x: !!python/object:os.system ls\n", "yaml")
def test_random_text(text: str, kind: str) -> None:
    through_everything(text, kind)


# -- mutated valid specs -----------------------------------------------------------------------


@st.composite
def mutated(draw: st.DrawFn, seeds: list[str]) -> str:
    text = draw(st.sampled_from(seeds))
    for _ in range(draw(st.integers(1, 4))):
        n = len(text)
        op = draw(st.sampled_from(["del", "ins", "swap", "del_line", "dup_line", "swap_lines", "cut"]))
        i = draw(st.integers(0, max(n - 1, 0)))
        if op == "del" and n:
            text = text[:i] + text[i + draw(st.integers(1, 8)) :]
        elif op == "ins":
            text = text[:i] + draw(st.sampled_from(_TOKENS) | st.text(min_size=1, max_size=3)) + text[i:]
        elif op == "swap" and n > 1:
            j = draw(st.integers(0, n - 1))
            a, b = sorted((i, j))
            text = text[:a] + text[b] + text[a + 1 : b] + text[a] + text[b + 1 :] if a != b else text
        elif op == "cut":
            text = text[:i]
        else:
            lines = text.split("\n")
            k = draw(st.integers(0, len(lines) - 1))
            if op == "del_line":
                del lines[k]
            elif op == "dup_line":
                lines.insert(k, lines[k])
            else:
                m = draw(st.integers(0, len(lines) - 1))
                lines[k], lines[m] = lines[m], lines[k]
            text = "\n".join(lines)
    return text


@FUZZ
@given(mutated(FLOW_SEEDS))
def test_mutated_flow(text: str) -> None:
    through_everything(text, "flow")


@FUZZ
@given(mutated(YAML_SEEDS))
def test_mutated_yaml(text: str) -> None:
    through_everything(text, "yaml")


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(pipelines(), st.data())
def test_mutated_generated_specs(spec: Pipeline, data: st.DataObject) -> None:
    """Generated specs (mostly invalid as pipelines: names that do not resolve) compile to located
    errors, and so do their mutations."""
    for kind, text in (("flow", print_flow(spec)), ("yaml", dump_yaml(spec))):
        through_everything(text, kind)
        through_everything(data.draw(mutated([text])), kind)


# -- pathological input fails fast ---------------------------------------------------------------

LIMIT_S = 2.0


def fails_fast(text: str, kind: str, codes: set[str], tmp_path: Path) -> None:
    path = tmp_path / f"bad.{kind}"
    path.write_text(text, encoding="utf-8")
    parse = parse_flow if kind == "flow" else parse_yaml
    for label, fn in (("parse", lambda: parse(text, str(path))), ("compile", lambda: flowc.compile(path))):
        t = time.perf_counter()
        with pytest.raises(SpecErrors) as e:
            fn()
        elapsed = time.perf_counter() - t
        assert set(e.value.codes) & codes, (label, e.value.codes)
        assert elapsed < LIMIT_S, f"{label} took {elapsed:.2f} s"
        for d in e.value.diagnostics:
            check_diagnostic(d, text, str(path))


DEPTH = 10_000


@pytest.mark.parametrize(
    "text",
    [
        "pipeline p {\n  description: " + "[" * DEPTH + "]" * DEPTH + "\n}\n",
        "pipeline p {\n  node n: llm {\n    demo " + "{a: " * DEPTH + "1" + "}" * DEPTH + "\n  }\n}\n",
        "pipeline p {" * DEPTH,
        "pipeline p {\n  input q: " + "list[" * DEPTH + "str" + "]" * DEPTH + "\n}\n",
    ],
    ids=["list", "record", "blocks", "type"],
)
def test_flow_nesting_too_deep(text: str, tmp_path: Path) -> None:
    fails_fast(text, "flow", {"nesting-too-deep"}, tmp_path)


def test_flow_too_large(tmp_path: Path) -> None:
    text = "pipeline p {\n" + ("  # " + "x" * 76 + "\n") * 66_000 + "}\n"
    assert len(text) > 5_000_000
    fails_fast(text, "flow", {"input-too-large"}, tmp_path)


def test_yaml_too_large(tmp_path: Path) -> None:
    text = "pipeline: p\n" + ("# " + "x" * 78 + "\n") * 66_000
    assert len(text) > 5_000_000
    fails_fast(text, "yaml", {"input-too-large"}, tmp_path)


def test_yaml_block_nesting_too_deep(tmp_path: Path) -> None:
    text = "pipeline: p\nx:\n" + "".join(" " * i + "- \n" for i in range(1, 2000))
    fails_fast(text, "yaml", {"nesting-too-deep", "input-too-large"}, tmp_path)


def test_yaml_flow_nesting_too_deep(tmp_path: Path) -> None:
    text = "pipeline: p\ndescription: " + "[" * DEPTH + "]" * DEPTH + "\n"
    fails_fast(text, "yaml", {"nesting-too-deep"}, tmp_path)


BOMB = "pipeline: p\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{b}: &{b} [" + ", ".join([f"*{a}"] * 9) + "]\n" for a, b in zip("abcdefgh", "bcdefghi")
)


def test_yaml_alias_bomb(tmp_path: Path) -> None:
    fails_fast(BOMB, "yaml", {"input-too-large"}, tmp_path)
