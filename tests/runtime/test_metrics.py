"""The shared metrics, checked against hand-computed values."""

from __future__ import annotations

from decimal import Decimal

import pytest

from flowc.errors import FlowcError
from flowc.runtime.corpus import Doc, Hit
from flowc.runtime.metrics import (
    METRICS,
    Metric,
    accuracy,
    contains,
    exact_match,
    extract_label,
    get_metric,
    hit_at_k,
    label_accuracy,
    last_integer,
    last_number,
    mrr,
    normalize_answer,
    recall_at_k,
    token_f1,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Beatles", "beatles"),
        ("  an   Apple,  a   day ", "apple day"),
        ("Hello, World!", "hello world"),
        ("U.S.A.", "usa"),
        ("Theatre the end", "theatre end"),  # "the" only as a whole word
        ("A", ""),
        ("\tTabs\nand\nnewlines\t", "tabs and newlines"),
        ("Rock 'n' Roll", "rock n roll"),
        ("", ""),
        (None, ""),
        (42, "42"),
    ],
)
def test_normalize_answer_squad_rules(text: object, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("pred", "gold", "expected"),
    [
        ("the Eiffel Tower", "Eiffel Tower", 1.0),
        ("Eiffel Tower.", "eiffel tower", 1.0),
        ("Eiffel", "Eiffel Tower", 0.0),
        ("Paris", ["London", "paris"], 1.0),
        ("Paris", [], 0.0),
        ("", "", 1.0),
        ("a", "the", 1.0),  # both normalise to empty
        (1968, "1968", 1.0),
    ],
)
def test_exact_match(pred: object, gold: str | list[str], expected: float) -> None:
    assert exact_match(pred, gold) == expected


def test_token_f1_known_values() -> None:
    # pred tokens: [barack, obama]; gold: [president, barack, obama]; P = 1, R = 2/3 → F1 = 0.8
    assert token_f1("Barack Obama", "President Barack Obama") == pytest.approx(0.8)
    # Repeated tokens count with multiplicity: pred [new, new, york], gold [new, york]:
    # common = 2, P = 2/3, R = 1 → 0.8
    assert token_f1("new new york", "New York") == pytest.approx(0.8)
    assert token_f1("the cat", "a cat") == 1.0  # articles dropped on both sides
    assert token_f1("dog", "cat") == 0.0
    assert token_f1("x y", ["nothing", "x y z"]) == pytest.approx(0.8)  # best gold
    assert token_f1("", "") == 1.0 and token_f1("", "cat") == 0.0 and token_f1("cat", "the") == 0.0


def test_token_f1_yes_no_must_match_exactly() -> None:
    assert token_f1("yes it is", "yes") == 0.0  # SQuAD F1 would give 0.5
    assert token_f1("Yes.", "yes") == 1.0
    assert token_f1("no", "no way") == 0.0
    assert token_f1("noanswer", "noanswer") == 1.0


@pytest.mark.parametrize(
    ("pred", "gold", "acc", "cont"),
    [
        ("The answer is Tulsa, Oklahoma.", "Tulsa", 1.0, 1.0),
        ("born in 1990", "1", 1.0, 0.0),  # substring vs token run
        ("It was the Eiffel Tower", "Eiffel Tower", 1.0, 1.0),
        ("Tower Eiffel", "Eiffel Tower", 0.0, 0.0),
        ("Paris", "Paris, France", 0.0, 0.0),
        ("anything", "the", 0.0, 0.0),  # an empty gold matches only an empty prediction
        ("", "a", 1.0, 1.0),
        ("mount everest", ["K2", "Everest"], 1.0, 1.0),
    ],
)
def test_accuracy_and_contains(pred: str, gold: str | list[str], acc: float, cont: float) -> None:
    assert accuracy(pred, gold) == acc
    assert contains(pred, gold) == cont


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I count 8 objects.", Decimal(8)),
        ("3 apples and 5 pears: 8", Decimal(8)),
        ("$1,234.50 in total", Decimal("1234.50")),
        ("from 1990-2000", Decimal(2000)),
        ("temperature -3", Decimal(-3)),
        ("1,2,3", Decimal(3)),
        ("He paid 18 dollars.\n#### 18", Decimal(18)),
        ("#### 72\nchecked with 5 other ways", Decimal(72)),
        ("no digits here", None),
        (7, Decimal(7)),
    ],
)
def test_last_number(text: object, expected: Decimal | None) -> None:
    assert last_number(text) == expected


def test_last_integer() -> None:
    assert last_integer("So the answer is 8.", "8") == 1.0
    assert last_integer("8.0", 8) == 1.0
    assert last_integer("5.5", "5") == 0.0  # TextGrad would truncate to 5
    assert last_integer("7 then 9", "7") == 0.0  # the last number counts
    assert last_integer("no number", "0") == 0.0
    assert last_integer("Janet makes $18.", "She sells 9 eggs for 2 each.\n#### 18") == 1.0
    assert last_integer("18", "not a number") == 0.0


def test_pubmedqa_labels() -> None:
    assert extract_label("Answer: Yes, because...") == "yes"
    assert extract_label("Maybe; no strong evidence") == "maybe"
    assert extract_label("nothing relevant") is None
    assert extract_label("nobody knows") is None  # whole words only
    assert label_accuracy("No.", "no") == 1.0
    assert label_accuracy("yes", "no") == 0.0
    assert label_accuracy("", "maybe") == 0.0


def test_retrieval_metrics() -> None:
    ranked = ["d3", "d1", "d7", "d2"]
    assert hit_at_k(ranked, "d1", 1) == 0.0 and hit_at_k(ranked, "d1", 2) == 1.0
    assert recall_at_k(ranked, ["d1", "d2"], 2) == 0.5
    assert recall_at_k(ranked, ["d1", "d2"], 4) == 1.0
    assert recall_at_k(ranked, ["d1", "d1"], 2) == 1.0  # golds counted once
    assert recall_at_k(ranked, [], 2) == 0.0
    assert mrr(ranked, ["d2", "d7"]) == pytest.approx(1 / 3)
    assert mrr(ranked, "d3") == 1.0 and mrr(ranked, "zz") == 0.0 and mrr([], "d3") == 0.0
    with pytest.raises(FlowcError) as e:
        hit_at_k("d3", "d3", 1)
    assert e.value.code == "invalid-value"


def test_retrieval_metrics_accept_documents_matching_by_id_or_title() -> None:
    docs = [{"id": "0", "title": "Paris", "text": "..."}, {"id": "1", "title": "Berlin", "text": "..."}]
    assert recall_at_k(docs, ["Berlin", "Rome"], 2) == 0.5  # a gold title matches a positional id's doc
    assert recall_at_k(docs, ["1", "0"], 1) == 0.5  # ids match too
    assert mrr(docs, "Berlin") == 0.5 and hit_at_k(docs, "Paris", 1) == 1.0
    hits = [Hit(Doc("a", "Alpha", "x"), 2.0), Hit(Doc("b", "Beta", "y"), 1.0)]
    assert mrr(hits, ["Beta"]) == 0.5 and hit_at_k([Doc("a", "Alpha", "x")], "a", 1) == 1.0
    assert recall_at_k([], ["x"], 5) == 0.0 and hit_at_k([], "x", 5) == 0.0
    with pytest.raises(FlowcError) as e:
        mrr([{"text": "no id"}], "x")
    assert e.value.code == "invalid-value"


def test_registry_entries_are_callable_and_named_consistently() -> None:
    assert {"exact_match", "f1", "accuracy", "contains", "last_integer", "label_accuracy", "mrr"} <= set(METRICS)
    assert {"hit@1", "hit@5", "recall@2", "recall@5", "recall@10"} <= set(METRICS)
    for name, m in METRICS.items():
        assert isinstance(m, Metric) and m.name == name and m.description
    assert METRICS["f1"]("Barack Obama", ["President Barack Obama"]) == pytest.approx(0.8)
    assert METRICS["recall@2"](["a", "b", "c"], ["b", "c"]) == 0.5
    assert METRICS["hit@1"].kind == "retrieval" and METRICS["exact_match"].kind == "answer"
    with pytest.raises(AttributeError):
        METRICS["f1"].name = "g"  # type: ignore[misc]


def test_get_metric_parses_any_k_and_rejects_unknown_names() -> None:
    assert get_metric("f1") is METRICS["f1"]
    r3 = get_metric("recall@3")
    assert r3.name == "recall@3" and r3(["a", "b", "c", "d"], ["c", "d"]) == 0.5
    assert get_metric("hit@7")(list("abcdefg"), "g") == 1.0
    for bad in ("F1", "recall@0", "hit@", "bleu"):
        with pytest.raises(FlowcError) as e:
            get_metric(bad)
        assert e.value.code == "unknown-metric" and "exact_match" in (e.value.hint or "")
