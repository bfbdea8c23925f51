"""How values appear in a prompt (docs/language.md, "Prompt templates")."""

from __future__ import annotations

from flowc.spec.template import render, render_value

PASSAGE_A = {"id": "a", "title": "A", "text": "alpha", "score": 1.0}
PASSAGE_B = {"id": "b", "title": "B", "text": "beta", "score": 0.5}
UNTITLED = {"id": "c", "text": "gamma"}


def test_passages_are_numbered_lines() -> None:
    assert render_value([PASSAGE_A, UNTITLED]) == "[1] A: alpha\n[2] gamma"


def test_the_passages_of_several_searches_are_one_numbered_list() -> None:
    # `all search.docs`: one list of passages per search, numbered on from one search to the next
    assert render_value([[PASSAGE_A], [PASSAGE_B, UNTITLED]]) == "[1] A: alpha\n[2] B: beta\n[3] gamma"
    assert render_value([[PASSAGE_A], []]) == "[1] A: alpha"


def test_other_lists_are_dashed_lines() -> None:
    assert render_value(["x", 2, None]) == "- x\n- 2\n- null"
    assert render_value([["x"], ["y"]]) == "- - x\n- - y"  # lists of other lists are not flattened
    assert render_value([[PASSAGE_A], ["not a passage"]]) == "- [1] A: alpha\n- - not a passage"


def test_scalars_and_records() -> None:
    assert render("{{a}} {{b}} {{c}} {{d.x}}", {"a": "t", "b": 1.5, "c": True, "d": {"x": 3}}) == "t 1.5 true 3"
    assert render_value({"k": "v"}) == '{"k": "v"}'
