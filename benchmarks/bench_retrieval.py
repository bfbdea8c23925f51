"""Retrieval quality and speed: BM25, dense (MiniLM) and multi-vector MaxSim, on HotpotQA and at 100k passages.

    .venv/bin/python benchmarks/bench_retrieval.py [--methods bm25,dense,maxsim] [--synthetic 100000]
                                                   [--n-queries 300] [--cache-dir DIR] [--no-cache]

HotpotQA: the 300 questions of the dev sample in ../shared/data/hotpotqa/dev.jsonl over the
2,966-paragraph corpus that bench_hotpotqa.py and bench_poqd.py use (every context paragraph of the
dev sample, deduplicated by title; see ../shared/data/hotpotqa/SOURCE.md). A question's relevant
documents are its two supporting-fact titles. Reported per method: Recall@2/5/10, Both@2 (both gold
paragraphs in the top 2) and MRR over the top 100; the index build (for dense and maxsim: encoding
the corpus, or loading it from the embedding cache, which the figures say); and speed, the median
of `--rounds` measurements taken in rounds that rotate the methods' order (so that a change in the
machine's load hits every method alike):

- `qps`: queries per second of `search_many` over all queries (k=10), query encoding included;
- `score_qps`: the same without the query encoding (vectors encoded beforehand): what the index
  itself costs per query;
- `query_ms_median`: the latency of single `search` calls.

MaxSim is timed twice: with the question as its only sub-query, and with K=3 sub-queries per
question (its words cut into three contiguous pieces, about what a decomposer writes) — the
multi-vector case POQD runs.

Synthetic (`--synthetic N`, default 100,000; 0 skips it): N passages made by repeating the 2,966
HotpotQA paragraphs under new ids, so that every passage and sentence text is a real one whose
vector the HotpotQA run already computed (encoding 100k passages with MiniLM would take hours on
two cores; the encoding rate is measured on HotpotQA as `docs_per_s`). The index sizes are real:
N document vectors for dense, about 4.1·N sentence vectors for MaxSim, N BM25 documents. Only
speed is reported for it (relevance is meaningless among copies).

Writes benchmarks/results/retrieval.json. Exits 0 with a message when the data folder is absent.
The machine is shared: compare the methods' figures within one run, not across runs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import machine, shared_data, write_results  # noqa: E402

from flowc.runtime.corpus import Corpus, Doc  # noqa: E402
from flowc.runtime.metrics import mrr, recall_at_k  # noqa: E402
from flowc.runtime.retrieval import (  # noqa: E402
    BM25Retriever,
    DenseRetriever,
    Encoder,
    MaxSimRetriever,
    MiniLMEncoder,
    default_cache_dir,
)
from flowc.runtime.retrieval.base import FloatArray  # noqa: E402
from flowc.runtime.retrieval.cache import cache_path  # noqa: E402
from flowc.runtime.retrieval.maxsim import SEGMENTATION  # noqa: E402

DEPTH = 100  # ranks considered for MRR
SPEED_K = 10


def hotpotqa_dev(data: Path, n: int) -> tuple[Corpus, list[dict[str, Any]]]:
    """The dev sample's paragraphs (ids = titles, as bench_hotpotqa writes them) and its questions."""
    rows = [json.loads(x) for x in (data / "dev.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    seen: dict[str, str] = {}
    for r in rows:
        for title, sentences in zip(r["context"]["title"], r["context"]["sentences"], strict=True):
            seen.setdefault(title, "".join(sentences).strip())
    corpus = Corpus([Doc(t, t, text) for t, text in seen.items()], source="hotpotqa dev sample")
    questions = [
        {"question": r["question"], "gold": list(dict.fromkeys(r["supporting_facts"]["title"]))} for r in rows[:n]
    ]
    return corpus, questions


def three_pieces(question: str) -> list[str]:
    """The question's words in three contiguous pieces (fewer for very short questions)."""
    words = question.split()
    k = min(3, len(words))
    bounds = np.linspace(0, len(words), k + 1).round().astype(int)
    return [" ".join(words[a:b]) for a, b in itertools.pairwise(bounds) if b > a]


class TableEncoder:
    """Vectors of known texts from a table (computed by a real encoder earlier); other texts (the
    queries) go to `inner`. Lets the synthetic corpus reuse the HotpotQA vectors."""

    def __init__(self, inner: Encoder, table: dict[str, np.ndarray]) -> None:
        self.inner = inner
        self.table = table

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: Sequence[str]) -> FloatArray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.table]
        if missing:
            self.table.update(zip(missing, self.inner.encode(missing), strict=True))
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


class Timed:
    """Wall and CPU seconds of a block."""

    def __enter__(self) -> Timed:
        self.t0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.c0


def timed_qps(fn: Callable[[], Any], n: int) -> float:
    with Timed() as t:
        fn()
    return n / t.wall


def latency_ms(fn: Callable[[int], Any], n: int) -> float:
    times = []
    for i in range(min(n, 20)):
        t0 = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times)


def quality(ranked: list[list[str]], golds: list[list[str]]) -> dict[str, float]:
    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 4)

    pairs = list(zip(ranked, golds, strict=True))
    return {
        "recall@2": mean([recall_at_k(r, g, 2) for r, g in pairs]),
        "recall@5": mean([recall_at_k(r, g, 5) for r, g in pairs]),
        "recall@10": mean([recall_at_k(r, g, 10) for r, g in pairs]),
        "both@2": mean([float(recall_at_k(r, g, 2) == 1.0) for r, g in pairs]),
        "mrr": mean([mrr(r, g) for r, g in pairs]),
    }


def build(method: str, corpus: Corpus, encoder: Encoder | None, cache: Path | None) -> tuple[Any, dict[str, Any]]:
    """The retriever, and its build time (for dense and maxsim: encoding, or loading the cache)."""
    cached = False
    if cache is not None and encoder is not None and method != "bm25":
        kind = "docs" if method == "dense" else f"segments-{SEGMENTATION}"
        cached = cache_path(cache, corpus.content_hash, encoder.model_id, kind).is_file()
    with Timed() as t:
        if method == "bm25":
            r: Any = BM25Retriever(corpus)
        elif method == "dense":
            assert encoder is not None
            r = DenseRetriever(corpus, encoder, cache)
        else:
            assert encoder is not None
            r = MaxSimRetriever(corpus, encoder, cache)
    out: dict[str, Any] = {"build_s": round(t.wall, 2), "build_cpu_s": round(t.cpu, 2)}
    if method != "bm25":
        out["from_cache"] = cached
        out["docs_per_s"] = None if cached else round(len(corpus) / t.wall, 1)
    if method == "maxsim":
        out["segments"] = len(r.segments)
    return r, out


def quality_of(method: str, r: Any, questions: list[dict[str, Any]]) -> dict[str, Any]:
    qs = [q["question"] for q in questions]
    golds = [q["gold"] for q in questions]
    out: dict[str, Any] = dict(quality([[h.doc.id for h in hits] for hits in r.search_many(qs, DEPTH)], golds))
    if method == "maxsim":
        pieces = [three_pieces(q) for q in qs]
        ranked = [[h.doc.id for h in hits] for hits in r.search_subqueries_many(pieces, DEPTH)]
        out["k3"] = quality(ranked, golds)
    return out


def speed_round(method: str, r: Any, corpus: Corpus, qs: list[str]) -> dict[str, float]:
    """One measurement of every speed figure of a method (the caller rotates methods and rounds)."""
    n = len(qs)
    out = {
        "qps": timed_qps(lambda: r.search_many(qs, SPEED_K), n),
        "query_ms_median": latency_ms(lambda i: r.search(qs[i], SPEED_K), n),
    }
    if method == "bm25":
        out["score_qps"] = out["qps"]  # nothing to encode
    elif method == "dense":
        vecs = r.encoder.encode(qs)
        out["score_qps"] = score_only_qps(lambda: vecs @ r.doc_embeddings.T, corpus, n)
    else:
        single = r.encode_subqueries([[q] for q in qs])
        out["score_qps"] = score_only_qps(lambda: r.similarities_of_vectors(single), corpus, n)
        pieces = [three_pieces(q) for q in qs]
        out["k3_qps"] = timed_qps(lambda: r.search_subqueries_many(pieces, SPEED_K), n)
        out["k3_query_ms_median"] = latency_ms(lambda i: r.search_subqueries(pieces[i], SPEED_K), n)
        k3 = r.encode_subqueries(pieces)
        out["k3_score_qps"] = score_only_qps(lambda: r.similarities_of_vectors(k3), corpus, n)
    return out


def score_only_qps(scores: Callable[[], np.ndarray], corpus: Corpus, n: int) -> float:
    """Queries/s of scoring and top-k given the query vectors (encoding excluded)."""
    from flowc.runtime.retrieval import top_k_hits

    with Timed() as t:
        for row in scores():
            top_k_hits(corpus, row, SPEED_K)
    return n / t.wall


def speeds(retrievers: dict[str, Any], corpus: Corpus, qs: list[str], rounds: int) -> dict[str, dict[str, float]]:
    """The median of `rounds` measurements per figure, the methods' order rotating each round, so
    that a change in the machine's load hits every method alike."""
    samples: dict[str, list[dict[str, float]]] = {m: [] for m in retrievers}
    names = list(retrievers)
    for i in range(rounds):
        for m in names[i % len(names) :] + names[: i % len(names)]:
            samples[m].append(speed_round(m, retrievers[m], corpus, qs))
    return {m: {k: round(statistics.median(s[k] for s in rows), 2) for k in rows[0]} for m, rows in samples.items()}


def synthetic(corpus: Corpus, n: int) -> Corpus:
    docs = corpus.docs
    return Corpus([Doc(f"syn-{i}", docs[i % len(docs)].title, docs[i % len(docs)].text) for i in range(n)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_data("hotpotqa"))
    ap.add_argument("--methods", default="bm25,dense,maxsim", help="comma-separated: bm25, dense, maxsim")
    ap.add_argument("--n-queries", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3, help="speed measurements per method (median reported)")
    ap.add_argument("--synthetic", type=int, default=100_000, help="passages of the synthetic corpus (0: skip)")
    ap.add_argument("--cache-dir", type=Path, default=default_cache_dir(), help="the embedding cache")
    ap.add_argument("--no-cache", action="store_true", help="encode the corpus again, to time encoding")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval.json")
    args = ap.parse_args(argv)
    if not (args.data / "dev.jsonl").is_file():
        print(f"skipped: {args.data / 'dev.jsonl'} is absent (set --data to ../shared/data/hotpotqa)")
        return 0
    cache = None if args.no_cache else args.cache_dir
    corpus, questions = hotpotqa_dev(args.data, args.n_queries)
    qs = [q["question"] for q in questions]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    encoder = MiniLMEncoder() if {"dense", "maxsim"} & set(methods) else None
    results: dict[str, Any] = {
        "dataset": f"HotpotQA dev sample: {len(questions)} questions, {len(corpus)}-paragraph corpus",
        "corpus_hash": corpus.content_hash,
        "encoder": encoder.model_id if encoder else None,
        "rounds": args.rounds,
        "machine": {**machine(), "load_avg_1m_before": round(os.getloadavg()[0], 2)},
        "hotpotqa": {},
        "synthetic": {},
    }
    print(f"HotpotQA: {len(questions)} questions, {len(corpus)} documents")
    built: dict[str, Any] = {}
    for m in methods:
        built[m], results["hotpotqa"][m] = build(m, corpus, encoder, cache)
        results["hotpotqa"][m].update(quality_of(m, built[m], questions))
    for m, fig in speeds(built, corpus, qs, args.rounds).items():
        results["hotpotqa"][m].update(fig)
        print(f"  {m:<7} {json.dumps(results['hotpotqa'][m])}")
    if args.synthetic:
        big = synthetic(corpus, args.synthetic)
        print(f"synthetic: {len(big)} passages (HotpotQA paragraphs repeated under new ids)")
        large: dict[str, Any] = {}
        for m in methods:
            enc: Encoder | None = None
            if m == "dense":
                enc = TableEncoder(encoder, dict(zip(corpus.contents(), built[m].doc_embeddings, strict=True)))  # type: ignore[arg-type]
            elif m == "maxsim":
                table = dict(zip(built[m].segments, built[m].segment_embeddings, strict=True))
                enc = TableEncoder(encoder, table)  # type: ignore[arg-type]
            large[m], fig = build(m, big, enc, None)
            fig.pop("from_cache", None)
            fig.pop("docs_per_s", None)
            results["synthetic"][m] = fig
        for m, fig in speeds(large, big, qs, args.rounds).items():
            results["synthetic"][m].update(fig)
            print(f"  {m:<7} {json.dumps(results['synthetic'][m])}")
    results["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
