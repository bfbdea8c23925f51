"""Retrieval quality and speed on HotpotQA: 100 questions over their 994-paragraph corpus.

    .venv/bin/python benchmarks/bench_retrieval.py [--methods bm25,dense[,maxsim]] [--data ../shared/data]

Data: `hotpotqa/hotpotqa_train.json` (100 HotpotQA train questions, HippoRAG v1) and
`hotpotqa/hotpotqa_train_corpus.json` (the union of their context paragraphs, `{title: [sentences]}`);
see `../shared/data/hotpotqa/SOURCE.md`. A question's relevant documents are its supporting-fact
titles (two per question). Reports, per method: Recall@2/5/10, Hit@5, MRR (over the top 100), the
time to build the index (for dense and maxsim: encoding the corpus, with no cache) in wall and CPU
seconds, and per-query
latency (median and p90 of single `search` calls, k=10). Writes `benchmarks/results/retrieval.json`.
Exits 0 with a message when the data folder is absent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _common import machine, write_results  # noqa: E402

from flowc.runtime.corpus import Corpus, load_corpus  # noqa: E402
from flowc.runtime.metrics import hit_at_k, mrr, recall_at_k  # noqa: E402
from flowc.runtime.retrieval import Encoder, MiniLMEncoder, make_retriever  # noqa: E402

DEPTH = 100  # ranks considered for MRR


def load_questions(path: Path) -> list[dict[str, Any]]:
    rows = json.loads(path.read_text(encoding="utf-8"))
    return [
        {
            "id": r["_id"],
            "question": r["question"],
            "gold": list(dict.fromkeys(title for title, _ in r["supporting_facts"])),
        }
        for r in rows
    ]


def evaluate(
    method: str, corpus: Corpus, questions: list[dict[str, Any]], encoder: Encoder | None, cache: Path | None
) -> dict[str, Any]:
    t0, c0 = time.perf_counter(), time.process_time()
    retriever = make_retriever(method, corpus, cache_dir=cache, encoder=encoder)
    build_s, build_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    ranked: list[list[str]] = []
    latencies: list[float] = []
    for q in questions:
        t = time.perf_counter()
        retriever.search(q["question"], 10)
        latencies.append(time.perf_counter() - t)
        ranked.append([h.doc.id for h in retriever.search(q["question"], DEPTH)])
    golds = [q["gold"] for q in questions]

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 4)

    latencies.sort()
    return {
        "recall@2": mean([recall_at_k(r, g, 2) for r, g in zip(ranked, golds, strict=True)]),
        "recall@5": mean([recall_at_k(r, g, 5) for r, g in zip(ranked, golds, strict=True)]),
        "recall@10": mean([recall_at_k(r, g, 10) for r, g in zip(ranked, golds, strict=True)]),
        "hit@5": mean([hit_at_k(r, g, 5) for r, g in zip(ranked, golds, strict=True)]),
        "mrr": mean([mrr(r, g) for r, g in zip(ranked, golds, strict=True)]),
        "build_s": round(build_s, 2),
        # CPU seconds over all threads: comparable across runs even when other jobs share the cores.
        "build_cpu_s": round(build_cpu_s, 2),
        "docs_per_s": round(len(corpus) / build_s, 1) if method == "dense" else None,
        "docs_per_cpu_s": round(len(corpus) / build_cpu_s, 1) if method == "dense" else None,
        "query_ms_median": round(1000 * statistics.median(latencies), 2),
        "query_ms_p90": round(1000 * latencies[int(0.9 * (len(latencies) - 1))], 2),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--methods", default="bm25,dense", help="comma-separated: bm25, dense, maxsim")
    ap.add_argument("--cache-dir", type=Path, default=None, help="embedding cache (default: none, to time encoding)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "retrieval.json")
    args = ap.parse_args(argv)
    folder = args.data / "hotpotqa"
    qpath, cpath = folder / "hotpotqa_train.json", folder / "hotpotqa_train_corpus.json"
    if not (qpath.is_file() and cpath.is_file()):
        print(f"skipped: {qpath} or {cpath} is absent (set --data to the shared data folder)")
        return 0
    corpus = load_corpus(cpath)
    questions = load_questions(qpath)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    encoder = MiniLMEncoder() if {"dense", "maxsim"} & set(methods) else None
    results: dict[str, Any] = {
        "dataset": "HotpotQA train sample (HippoRAG v1): 100 questions, 994-paragraph corpus",
        "corpus_hash": corpus.content_hash,
        "n_questions": len(questions),
        "n_docs": len(corpus),
        "encoder": encoder.model_id if encoder else None,
        # Timings on a shared machine depend on what else runs: record the load around the run.
        "machine": {**machine(), "load_avg_1m_before": round(os.getloadavg()[0], 2)},
        "methods": {},
    }
    print(f"{len(questions)} questions, {len(corpus)} documents")
    print(
        f"{'method':<8} {'R@2':>6} {'R@5':>6} {'R@10':>6} {'Hit@5':>6} {'MRR':>6}"
        f" {'build s':>8} {'cpu s':>7} {'q ms':>7}"
    )
    for m in methods:
        r = evaluate(m, corpus, questions, encoder, args.cache_dir)
        results["methods"][m] = r
        print(
            f"{m:<8} {r['recall@2']:>6.3f} {r['recall@5']:>6.3f} {r['recall@10']:>6.3f} {r['hit@5']:>6.3f}"
            f" {r['mrr']:>6.3f} {r['build_s']:>8.1f} {r['build_cpu_s']:>7.1f} {r['query_ms_median']:>7.2f}"
        )
    results["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    write_results(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
