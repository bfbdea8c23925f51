"""BM25 retrieval, the top-k helper, the factory, and lazy imports of optional packages."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from flowc.errors import FlowcError
from flowc.runtime.corpus import Corpus, Doc, load_corpus
from flowc.runtime.metrics import hit_at_k, recall_at_k
from flowc.runtime.retrieval import BM25Retriever, Retriever, make_retriever, top_k_hits

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "pipelines" / "data"


@pytest.fixture(scope="module")
def wiki() -> Corpus:
    return load_corpus(DATA / "tiny_wiki.jsonl")


@pytest.fixture(scope="module")
def bm25(wiki: Corpus) -> BM25Retriever:
    return BM25Retriever(wiki)


def test_bm25_finds_supporting_paragraphs_of_the_fixture_questions(bm25: BM25Retriever) -> None:
    qa = [json.loads(line) for line in (DATA / "tiny_qa.jsonl").read_text().splitlines()]
    results = bm25.search_many([q["question"] for q in qa], 5)
    ids = [[h.doc.id for h in hits] for hits in results]
    hit5 = np.mean([hit_at_k(i, q["supporting_titles"], 5) for i, q in zip(ids, qa, strict=True)])
    recall5 = np.mean([recall_at_k(i, q["supporting_titles"], 5) for i, q in zip(ids, qa, strict=True)])
    # Measured: hit@5 0.95, recall@5 0.775 on these 20 questions over 200 paragraphs.
    assert hit5 >= 0.9 and recall5 >= 0.7


def test_bm25_ranks_by_score_and_returns_hits(bm25: BM25Retriever) -> None:
    hits = bm25.search("Tinted Windows band first performance", 5)
    assert 1 <= len(hits) <= 5
    assert hits[0].doc.title.startswith("Tinted Windows")
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True) and scores[-1] > 0
    assert isinstance(bm25, Retriever)


def test_stopword_only_or_unknown_query_returns_nothing(bm25: BM25Retriever) -> None:
    assert bm25.search("the of and is", 5) == []
    assert bm25.search("zzzqqqxxv", 5) == []
    assert bm25.search("", 5) == []


def test_ties_break_by_corpus_position_and_k_is_capped() -> None:
    docs = [Doc(str(i), "", "apple banana") for i in range(5)] + [Doc("x", "", "cherry")]
    r = BM25Retriever(Corpus(docs))
    assert [h.doc.id for h in r.search("apple", 3)] == ["0", "1", "2"]
    assert [h.doc.id for h in r.search("apple", 100)] == ["0", "1", "2", "3", "4"]
    assert r.search_many(["apple", "cherry"], 1) == [r.search("apple", 1), r.search("cherry", 1)]
    assert r.search_many([], 3) == []


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_bad_k_is_invalid_value(bm25: BM25Retriever, k: object) -> None:
    with pytest.raises(FlowcError) as e:
        bm25.search("x", k)  # type: ignore[arg-type]
    assert e.value.code == "invalid-value"


def test_top_k_matches_a_stable_sort_including_ties() -> None:
    rng = np.random.default_rng(0)
    corpus = Corpus([Doc(str(i), "", f"d{i}") for i in range(50)])
    for trial in range(200):
        # Few distinct values, so ties are everywhere, including at the k-th place.
        scores = rng.integers(0, 4, size=50).astype(np.float32)
        k = int(rng.integers(1, 60))
        expected = sorted(range(50), key=lambda i: (-scores[i], i))[:k]
        got = top_k_hits(corpus, scores, k)
        assert [int(h.doc.id) for h in got] == expected, trial
        positive = top_k_hits(corpus, scores, k, positive_only=True)
        assert [int(h.doc.id) for h in positive] == [i for i in expected if scores[i] > 0]


def test_make_retriever_bm25_and_unknown_method(wiki: Corpus) -> None:
    assert isinstance(make_retriever("bm25", wiki), BM25Retriever)
    with pytest.raises(FlowcError) as e:
        make_retriever("colbert", wiki)
    assert e.value.code == "invalid-value" and "bm25, dense, maxsim" in (e.value.hint or "")


def test_missing_bm25s_names_the_pip_command(monkeypatch: pytest.MonkeyPatch, wiki: Corpus) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bm25s" else real(name, *a))
    with pytest.raises(FlowcError) as e:
        BM25Retriever(wiki)
    assert e.value.code == "model-file-not-found" and "pip install bm25s" in (e.value.hint or "")


def test_importing_retrieval_does_not_import_heavy_packages() -> None:
    code = (
        "import sys, flowc.runtime.retrieval, flowc.runtime.corpus, flowc.runtime.metrics;"
        "print(sorted(m for m in ('bm25s', 'onnxruntime', 'tokenizers', 'scipy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_benchmark_skips_cleanly_without_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench_retrieval
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    out = tmp_path / "r.json"
    assert bench_retrieval.main(["--data", str(tmp_path), "--out", str(out)]) == 0
    assert "skipped" in capsys.readouterr().out and not out.exists()
