"""Bindings and conditions are read by the `.flow` grammar's own rules, for both front ends."""

from __future__ import annotations

import pytest

import flowc
from flowc.spec.exprs import (
    BoolOp,
    Coalesce,
    Compare,
    ExprSyntaxError,
    History,
    Lit,
    Not,
    Ref,
    parse_binding,
    parse_condition,
)
from flowc.spec.io import parse_yaml
from flowc.syntax.parser import parse_flow
from flowc.syntax.printer import print_flow


def test_bindings_read_by_the_grammar() -> None:
    e = parse_binding('plan.query ?? question ?? "x" ?? 3 ?? true')
    assert isinstance(e, Coalesce)
    assert [type(o) for o in e.options] == [Ref, Ref, Lit, Lit, Lit]
    assert [o.offset for o in e.options] == [0, 14, 26, 33, 38]
    h = parse_binding("all reflect.evidence")
    assert isinstance(h, History) and h.offset == 0 and h.ref == Ref(0, "reflect", "evidence")


def test_conditions_read_by_the_grammar() -> None:
    c = parse_condition('not (a == 1 or b) and plan.next contains "x"')
    assert isinstance(c, BoolOp) and c.op == "and"
    assert isinstance(c.items[0], Not) and isinstance(c.items[1], Compare)
    assert str(c) == 'not (a == 1 or b) and plan.next contains "x"'


@pytest.mark.parametrize(
    ("text", "message", "offset"),
    [
        ("a ??", "expression ends early", 4),
        ("'x'", 'unexpected character "\'"', 0),
        ("a $ b", "unexpected character '$'", 2),
        ("all q", "'all' takes a node output", 4),
        ("a ?? ?? b", "expected a name, a node output or a literal, found '??'", 5),
        ('"abc', "unterminated string", 0),
        ("a\u00a0?? b", "U+00A0 (NO-BREAK SPACE)", 1),
        ("", "empty binding", 0),
    ],
)
def test_binding_errors_have_a_message_and_an_offset(text: str, message: str, offset: int) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_binding(text)
    assert message in str(info.value)
    assert info.value.offset == offset


@pytest.mark.parametrize("word", ["truest", "nullable", "falsehood", "true_", "null0", "notable", "containsx"])
def test_words_that_begin_with_a_constant_or_keyword_are_names(word: str) -> None:
    """In every position a name or a bare word may take, in both front ends and back through `fmt`."""
    flow = f"""pipeline p {{
  input {word}: str
  output answer: str <- gen.answer
  model small = "local/smollm2"
  node gen: llm {{
    model: small
    role: {word}
    prompt: "Q: {{{{q}}}}"
    q <- {word}
    output answer: str
  }}
  loop again: gen -> gen max 2 while {word} contains "x" and {word} != null
}}
"""
    spec = parse_flow(flow, "p.flow")
    assert spec.nodes["gen"].role == word  # type: ignore[union-attr]
    assert spec.nodes["gen"].inputs["q"] == Ref(0, None, word)
    from_yaml = parse_yaml(
        f"pipeline: p\ninputs: {{{word}: {{type: str}}}}\noutputs: {{answer: {{source: gen.answer}}}}\n"
        f"nodes:\n  gen: {{kind: llm, role: {word}, prompt: 'Q: {{{{q}}}}', inputs: {{q: {word}}},"
        " outputs: {answer: str}}\n",
        "p.yaml",
    )
    assert from_yaml.nodes["gen"].role == word  # type: ignore[union-attr]
    # YAML → .flow → read back: the printed file is one flowc accepts, meaning the same
    assert parse_flow(print_flow(from_yaml), "printed.flow").dump() == from_yaml.dump()


def test_the_reader_is_registered_by_importing_flowc() -> None:
    assert flowc.compile  # `import flowc` imports flowc.syntax, which installs the reader
    assert parse_binding("x") == Ref(0, None, "x")
