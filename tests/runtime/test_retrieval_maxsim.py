"""Multi-vector MaxSim retrieval (POQD): the formula, segmentation, the hallucination filter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _retrieval_fakes import HashEncoder

from flowc.errors import FlowcError
from flowc.runtime.corpus import Corpus, Doc
from flowc.runtime.retrieval import MaxSimRetriever, filter_subqueries, make_retriever, split_sentences


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("One. Two! Three? Four", ["One.", "Two!", "Three?", "Four"]),
        ("J. R. R. Tolkien wrote it. He was British.", ["J. R. R. Tolkien wrote it.", "He was British."]),
        (
            "He joined the U.S. Army in 1942. Dr. Smith agreed.",
            ["He joined the U.S. Army in 1942.", "Dr. Smith agreed."],
        ),
        ('She said "Go." Then left.', ['She said "Go."', "Then left."]),
        ("It cost 3.5 dollars. 1990 was next.", ["It cost 3.5 dollars.", "1990 was next."]),
        ("lowercase after. period stays", ["lowercase after. period stays"]),
        ("  ", []),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert split_sentences(text) == expected


@pytest.mark.parametrize(
    ("subqueries", "query", "expected"),
    [
        (
            ["Hong Kong population", "King Kong movie"],
            "What is the population of Hong Kong?",
            ["Hong Kong population", "Kong"],
        ),
        (["invented words", "nothing"], "Who founded Tulsa?", []),
        (["Tulsa founder", "tulsa FOUNDER!", "who"], "Who was the founder of Tulsa?", ["Tulsa founder", "who"]),
        (["O'Neill's birthplace"], "Where was O'Neill's birthplace?", ["O'Neill's birthplace"]),
    ],
)
def test_hallucination_filter(subqueries: list[str], query: str, expected: list[str]) -> None:
    assert filter_subqueries(subqueries, query) == expected


def corpus() -> Corpus:
    return Corpus(
        [
            Doc("p", "Paris", "Paris is the capital of France. The Eiffel Tower stands there."),
            Doc("b", "Berlin", "Berlin is the capital of Germany. It has the Brandenburg Gate."),
            Doc("t", "", "Tokyo is in Japan"),
        ]
    )


def test_similarity_is_the_mean_over_subqueries_of_the_best_sentence() -> None:
    enc = HashEncoder()
    c = corpus()
    r = MaxSimRetriever(c, enc)
    # Segments: each sentence prefixed by its document's title; a title-less doc keeps bare sentences.
    assert r.segments == [
        "Paris: Paris is the capital of France.",
        "Paris: The Eiffel Tower stands there.",
        "Berlin: Berlin is the capital of Germany.",
        "Berlin: It has the Brandenburg Gate.",
        "Tokyo is in Japan",
    ]
    subs = ["capital of Germany", "Eiffel Tower", "Japan"]
    q = enc.encode(subs)
    seg = enc.encode(r.segments)
    owners = [0, 0, 1, 1, 2]
    brute = [np.mean([max(q[i] @ seg[j] for j in range(5) if owners[j] == d) for i in range(3)]) for d in range(3)]
    np.testing.assert_allclose(r.similarities(subs), brute, rtol=1e-5, atol=1e-6)
    hits = r.search_subqueries(subs, 3)
    assert [h.score for h in hits] == pytest.approx(sorted(brute, reverse=True), abs=1e-6)


def test_search_uses_the_query_as_its_only_subquery() -> None:
    r = MaxSimRetriever(corpus(), HashEncoder())
    assert r.search("Brandenburg Gate", 2) == r.search_subqueries(["Brandenburg Gate"], 2)
    assert r.search_many(["Eiffel", "Japan"], 1) == [r.search("Eiffel", 1), r.search("Japan", 1)]
    assert r.search("Brandenburg Gate", 1)[0].doc.id == "b"


def test_the_filter_applies_when_the_query_is_given_and_falls_back_to_it() -> None:
    enc = HashEncoder()
    r = MaxSimRetriever(corpus(), enc)
    query = "Which capital has the Brandenburg Gate?"
    # "Tokyo" is not in the query: the filter removes that sub-query entirely.
    filtered = r.search_subqueries(["Brandenburg Gate", "Tokyo"], 3, query=query)
    assert filtered == r.search_subqueries(["Brandenburg Gate"], 3)
    # Nothing survives the filter: the query itself is used.
    assert r.search_subqueries(["Tokyo Japan"], 3, query=query) == r.search_subqueries([query], 3)
    with pytest.raises(FlowcError) as e:
        r.search_subqueries_many([["a"], ["b"]], 1, queries=["only one"])
    assert e.value.code == "invalid-value"


@pytest.mark.parametrize("bad", [[], "a string, not a list"])
def test_subqueries_must_be_a_non_empty_list(bad: list[str] | str) -> None:
    r = MaxSimRetriever(corpus(), HashEncoder())
    with pytest.raises(FlowcError) as e:
        r.search_subqueries(bad, 2)
    assert e.value.code == "invalid-value"


def test_segment_embeddings_are_cached(tmp_path: Path) -> None:
    c = corpus()
    first = HashEncoder()
    make_retriever("maxsim", c, cache_dir=tmp_path, encoder=first)
    again = HashEncoder()
    r = make_retriever("maxsim", c, cache_dir=tmp_path, encoder=again)
    assert len(first.calls) == 1 and again.calls == []
    assert isinstance(r, MaxSimRetriever)
    assert len(list(tmp_path.glob("segments-*.npy"))) == 1


def test_many_queries_score_as_each_alone_in_any_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    r = MaxSimRetriever(corpus(), HashEncoder())
    groups = [["capital of Germany", "Eiffel Tower", "Japan"], ["Tokyo"], ["Paris", "Gate"]]
    alone = np.stack([r.similarities(g) for g in groups])
    np.testing.assert_allclose(r.similarities_many(groups), alone, rtol=1e-6, atol=1e-7)
    # one sub-query per matrix product, or two (a query never splits across products)
    for block in (1, 2 * len(r.segments)):
        monkeypatch.setattr("flowc.runtime.retrieval.maxsim.MAX_BLOCK", block)
        np.testing.assert_allclose(r.similarities_many(groups), alone, rtol=1e-6, atol=1e-7)
    assert r.similarities_many([]).shape == (0, 3)


FILTER_SPEC = """
pipeline p {
  input question: str
  output docs: list[Doc] <- search.docs
  model m = "fake/model"
  corpus c = "CORPUS"
  node decompose: llm {
    prompt: "Sub-queries of: {{question}}"
    format: tagged
    question <- question
    output subqueries: list[str]
  }
  node search: retrieve {
    corpus: c
    method: maxsim
    k: 1
    FILTER
    queries <- decompose.subqueries
    QUERY
  }
}
"""


@pytest.mark.parametrize("filtered", [True, False])
def test_the_retrieve_node_filters_subqueries_against_its_query(tmp_path: Path, filtered: bool) -> None:
    import json

    import flowc
    from flowc.runtime.executor import Executor
    from flowc.runtime.fakes import ScriptedLM
    from flowc.runtime.resources import RetrieverPool

    path = tmp_path / "c.jsonl"
    docs = [
        {"id": "movie", "title": "King Kong", "text": "King Kong is a movie about a giant ape."},
        {"id": "city", "title": "Hong Kong", "text": "Hong Kong has a population of seven million."},
    ]
    path.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    spec = FILTER_SPEC.replace("CORPUS", path.name)
    spec = spec.replace("FILTER", "filter_subqueries: true" if filtered else "")
    spec = spec.replace("QUERY", "query <- question" if filtered else "")
    spec_file = tmp_path / "p.flow"
    spec_file.write_text(spec)
    # "King Kong movie" would find the film; the filter keeps only "Kong", then "population".
    lm = ScriptedLM(["<subqueries><item>King Kong movie ape</item><item>population</item></subqueries>"])
    pool = RetrieverPool(tmp_path / "cache", encoder=HashEncoder())
    result = Executor(flowc.compile(spec_file), lm=lm, retrievers=pool).run_sync(
        {"question": "What is the population of Hong Kong?"}
    )
    assert result.status == "ok", result.error
    assert result.outputs["docs"][0]["id"] == ("city" if filtered else "movie")
