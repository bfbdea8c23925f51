"""Multi-hop QA quality with the embedded model: agentic RAG against retrieve-then-generate and closed book.

    .venv/bin/python benchmarks/bench_hotpotqa.py [--dataset hotpotqa] [--n 100]
        [--systems agentic_rag,retrieve_generate,closed_book] [--model local/qwen-coder-0.5b]
        [--threads 1] [--concurrency 1] [--fresh]

Datasets (under ../shared/data, see each folder's SOURCE.md), each with a fixed question order and
a corpus that does not depend on N (so a larger N continues a smaller run):
  hotpotqa          the first N of the HotpotQA dev sample (hotpotqa/dev.jsonl, distractor setting);
                    corpus: every context paragraph of the 300 questions, deduplicated by title
  2wikimultihopqa   the first N of the 354 dev questions whose supporting passages are all in the
                    6,119-passage corpus (2wikimultihopqa/derived_dev_ids_gold_in_corpus.json)
  musique           the first N of the 100 MuSiQue-Ans train questions; corpus: their 1,890
                    paragraphs; gold = the answer and its aliases

Systems, all on one model (`--model`, default the demo model `local/qwen-coder-0.5b`):
  agentic_rag        pipelines/agentic_rag.flow: retrieve -> reflect -> plan, which may search again
                     with a new query -> generate
  retrieve_generate  benchmarks/specs/retrieve_generate.flow: BM25 top 3, one answer call
  closed_book        benchmarks/specs/closed_book.flow: one call, no retrieval
Each runs from a temporary copy of its spec with the corpus path and the model id swapped in.

Each system is evaluated with flowc's `evaluate()` and the checkpoint folder
benchmarks/results/<dataset>/<system>/ (results.jsonl, one line per finished question), so a
killed run continues where it stopped; `--fresh` starts over, and a checkpoint made with another
model or spec text starts over by itself. Per system it reports EM, F1, Acc (the gold is contained
in the answer), LM calls, distinct search queries and seconds per question; for agentic_rag against
each other system, the paired difference of F1 and EM with a 95% bootstrap interval. Writes
benchmarks/results/<dataset>.json. Exits 0 with a message when the data or the model is missing.

`--threads N` loads the embedded model with N llama.cpp threads (the default is llama.cpp's, one
per core). On a machine shared with other work, 1 thread is much faster than 2: llama.cpp's
threads wait for each other at every layer, so one preempted thread stalls both.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import write_results  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = {
    "agentic_rag": ROOT / "pipelines" / "agentic_rag.flow",
    "retrieve_generate": ROOT / "benchmarks" / "specs" / "retrieve_generate.flow",
    "closed_book": ROOT / "benchmarks" / "specs" / "closed_book.flow",
}
DEFAULT_MODEL = "local/qwen-coder-0.5b"
BOOTSTRAP_SAMPLES = 10_000


# -- datasets: (questions, corpus rows) --------------------------------------------------------------


def _hotpotqa(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rows = [json.loads(x) for x in (folder / "dev.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    paragraphs: dict[str, str] = {}
    for r in rows:
        for title, sentences in zip(r["context"]["title"], r["context"]["sentences"], strict=True):
            paragraphs.setdefault(title, "".join(sentences).strip())
    questions = [{"id": r["id"], "question": r["question"], "answer": r["answer"], "type": r.get("type")} for r in rows]
    return questions, [{"id": t, "title": t, "text": x} for t, x in paragraphs.items()]


def _two_wiki(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    by_id = {r["_id"]: r for r in json.loads((folder / "dev.json").read_text(encoding="utf-8"))}
    ids = json.loads((folder / "derived_dev_ids_gold_in_corpus.json").read_text(encoding="utf-8"))
    questions = [
        {"id": i, "question": by_id[i]["question"], "answer": by_id[i]["answer"], "type": by_id[i]["type"]} for i in ids
    ]
    corpus = json.loads((folder / "2wikimultihopqa_corpus.json").read_text(encoding="utf-8"))
    return questions, [{"id": p["title"], "title": p["title"], "text": p["text"]} for p in corpus]


def _musique(folder: Path) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    rows = json.loads((folder / "musique_train.json").read_text(encoding="utf-8"))
    questions = [
        {
            "id": r["id"],
            "question": r["question"],
            "answer": [r["answer"], *r.get("answer_aliases", [])],
            "type": r["id"].split("__")[0],
        }
        for r in rows
    ]
    corpus = json.loads((folder / "musique_train_corpus.json").read_text(encoding="utf-8"))
    return questions, [{"id": str(i), "title": p["title"], "text": p["text"]} for i, p in enumerate(corpus)]


DATASETS = {
    "hotpotqa": ("hotpotqa", "dev.jsonl", _hotpotqa),
    "2wikimultihopqa": ("2wikimultihopqa", "derived_dev_ids_gold_in_corpus.json", _two_wiki),
    "musique": ("musique", "musique_train.json", _musique),
}


# -- specs and checkpoints -------------------------------------------------------------------------


def spec_for(system: str, corpus: Path, model: str, tmp: Path) -> tuple[Path, str]:
    """A temporary copy of the system's spec with the corpus and the model swapped in; returns its path
    and a fingerprint of the spec text (without the temporary paths) for the checkpoint."""
    source = SYSTEMS[system]
    text = source.read_text(encoding="utf-8")
    fingerprint = hashlib.sha256(f"{text}\n{model}".encode()).hexdigest()[:16]
    text = re.sub(r'(corpus\s+\w+\s*=\s*)"[^"]*"', lambda m: m.group(1) + json.dumps(str(corpus)), text)
    text = re.sub(r'(model\s+\w+\s*=\s*)"[^"]*"', lambda m: m.group(1) + json.dumps(model), text)
    path = tmp / source.name
    path.write_text(text, encoding="utf-8")
    return path, fingerprint


def prepare_checkpoint(folder: Path, fingerprint: str, fresh: bool) -> bool:
    """Whether the run resumes; starts the folder over when asked or when it holds another setup."""
    meta = folder / "meta.json"
    if folder.exists() and not fresh:
        try:
            old = json.loads(meta.read_text())["fingerprint"]
        except (OSError, ValueError, KeyError):
            old = None
        if old == fingerprint:
            return True
        print(f"  {folder.name}: checkpoint made with another spec or model: starting over")
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    meta.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
    return False


# -- running and scoring ---------------------------------------------------------------------------


def run_system(
    system: str, spec: Path, fingerprint: str, records: list[dict[str, Any]], args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """The system's summary, and per question its scores (em, f1, acc) for the paired comparison."""
    import flowc
    from flowc.runtime.evaluate import bind_metrics, evaluate
    from flowc.runtime.session import open_executor

    compiled = flowc.compile(spec)
    metrics = bind_metrics(compiled.spec.metrics, [], None, None, "answer")
    folder = args.checkpoints / system
    resume = prepare_checkpoint(folder, fingerprint, args.fresh)
    ids = {str(r["id"]) for r in records}
    done_before = 0
    if resume and (folder / "results.jsonl").exists():
        for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines():
            try:
                done_before += str(json.loads(line)["id"]) in ids
            except (ValueError, KeyError):
                continue
    executor = open_executor(compiled, cache=False, store=False)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] > 30:
            last[0] = now
            print(f"  {system}: {done}/{total} questions", flush=True)

    t0 = time.perf_counter()
    report = asyncio.run(
        evaluate(executor, records, metrics, folder, concurrency=args.concurrency, resume=resume, on_progress=progress)
    )
    wall = time.perf_counter() - t0
    rows = read_rows(folder, records)
    per_question = scores_of(rows, records)
    searches, distinct = [], []
    for row in rows.values():
        searched = (row.get("outputs") or {}).get("searched")
        if isinstance(searched, list):
            searches.append(len(searched))
            distinct.append(len({str(q).strip().lower() for q in searched}))
    errors = sorted({str(r.get("error"))[:160] for r in rows.values() if r["status"] != "ok"})
    n = max(len(per_question), 1)
    summary = {
        "spec": str(SYSTEMS[system].relative_to(ROOT)),
        "questions": report["examples"],
        "em": report["metrics"].get("em", 0.0),
        "f1": report["metrics"].get("f1", 0.0),
        "acc": sum(s["acc"] for s in per_question.values()) / n,
        "errors": report["errors"],
        "error_examples": errors[:3],
        "lm_calls_per_question": report["lm_calls"] / max(report["examples"], 1),
        "tokens_per_question": report["tokens"] / max(report["examples"], 1),
        "searches_per_question": sum(searches) / len(searches) if searches else None,
        "distinct_queries_per_question": sum(distinct) / len(distinct) if distinct else None,
        "seconds_per_question": report["seconds_per_example"],
        "resumed_with": done_before,
        "ran_now": len(records) - done_before,
        "wall_s_now": wall,
        "checkpoint": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder),
    }
    return summary, per_question


def read_rows(folder: Path, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The checkpoint's rows for these questions, by id, in question order."""
    rows: dict[str, dict[str, Any]] = {}
    path = folder / "results.jsonl"
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
                rows[str(row["id"])] = row
            except (ValueError, KeyError):
                continue
    return {i: rows[i] for i in (str(r["id"]) for r in records) if i in rows}


def scores_of(rows: dict[str, dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per question: em and f1 as evaluated, and acc (a gold is contained in the answer)."""
    from flowc.runtime.metrics import accuracy

    gold = {str(r["id"]): r["answer"] for r in records}
    out = {}
    for i, row in rows.items():
        ok = row["status"] == "ok"
        out[i] = {
            "em": row["scores"].get("em", 0.0),
            "f1": row["scores"].get("f1", 0.0),
            "acc": accuracy((row.get("outputs") or {}).get("answer"), gold[i]) if ok else 0.0,
        }
    return out


def paired_bootstrap(a: dict[str, float], b: dict[str, float], seed: int = 0) -> dict[str, float]:
    """Mean of a - b over the questions both have, with a 95% percentile bootstrap interval
    (questions resampled with replacement) and the share of resamples where a does not beat b."""
    ids = sorted(set(a) & set(b))
    diffs = [a[i] - b[i] for i in ids]
    if not diffs:
        return {"questions": 0}
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(BOOTSTRAP_SAMPLES))
    return {
        "questions": len(diffs),
        "mean_diff": sum(diffs) / len(diffs),
        "ci95_low": means[int(0.025 * BOOTSTRAP_SAMPLES)],
        "ci95_high": means[int(0.975 * BOOTSTRAP_SAMPLES) - 1],
        "p_not_better": sum(m <= 0 for m in means) / BOOTSTRAP_SAMPLES,
        "wins": sum(d > 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
    }


def compare(per_question: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """agentic_rag against each other system that ran, on F1 and EM."""
    out: dict[str, Any] = {}
    if "agentic_rag" not in per_question:
        return out
    for other in per_question:
        if other == "agentic_rag":
            continue
        out[f"agentic_rag - {other}"] = {
            metric: paired_bootstrap(
                {i: s[metric] for i, s in per_question["agentic_rag"].items()},
                {i: s[metric] for i, s in per_question[other].items()},
            )
            for metric in ("f1", "em")
        }
    return out


def load_model(model: str, threads: int | None) -> str | None:
    """Load the embedded model now (with `threads` if given); a reason to skip when it is missing."""
    if not model.startswith("local/"):
        return None
    from flowc.errors import FlowcError
    from flowc.runtime import local_provider

    try:
        local_provider.resolve_model_path(model)
    except FlowcError as e:
        return f"the embedded model {model} is not installed: {e}"
    local_provider.load(model, local_provider.LocalModelOptions(n_threads=threads))
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="hotpotqa", choices=sorted(DATASETS))
    ap.add_argument("--n", type=int, default=100, help="questions: the first N of the dataset's fixed order")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS))
    ap.add_argument("--model", default=DEFAULT_MODEL, help="the model every system uses")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads of the embedded model")
    ap.add_argument(
        "--concurrency", type=int, default=1, help="questions in flight (the embedded model decodes one call at a time)"
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=None,
        help="the dataset's folder (default ../shared/data/<dataset>; $FLOWC_HOTPOTQA for hotpotqa)",
    )
    ap.add_argument("--checkpoints", type=Path, default=None, help="default benchmarks/results/<dataset>/")
    ap.add_argument("--fresh", action="store_true", help="ignore checkpoints and start over")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results/<dataset>.json")
    args = ap.parse_args()

    folder_name, probe, loader = DATASETS[args.dataset]
    env = os.environ.get("FLOWC_HOTPOTQA") if args.dataset == "hotpotqa" else None
    data = args.data or (Path(env) if env else DATA / folder_name)
    args.checkpoints = args.checkpoints or RESULTS / args.dataset
    out = args.out or RESULTS / f"{args.dataset}.json"
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        ap.error(f"unknown system {unknown[0]!r}; choose from {', '.join(SYSTEMS)}")
    if not (data / probe).is_file():
        print(f"skipped: no {args.dataset} data at {data / probe} (pass --data with the folder)")
        return
    skip = load_model(args.model, args.threads)
    if skip:
        print(f"skipped: {skip}")
        return

    questions, corpus_rows = loader(data)
    records = questions[: args.n]
    results: dict[str, Any] = {}
    per_question: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="flowc-multihop-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / f"{args.dataset}_corpus.jsonl"
        corpus.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in corpus_rows), encoding="utf-8")
        print(f"{args.dataset}: {len(records)} questions; corpus {len(corpus_rows)} passages; model {args.model}")
        for system in systems:
            spec, fingerprint = spec_for(system, corpus, args.model, tmp)
            print(f"{system}: running ({spec.name})", flush=True)
            results[system], per_question[system] = run_system(system, spec, fingerprint, records, args)

        # Systems not run now still enter the comparison when their checkpoint holds every
        # question, made with the spec and model of today.
        for system in SYSTEMS:
            folder = args.checkpoints / system
            if system in per_question or not (folder / "meta.json").exists():
                continue
            _, fingerprint = spec_for(system, corpus, args.model, tmp)
            if json.loads((folder / "meta.json").read_text()).get("fingerprint") != fingerprint:
                continue
            rows = read_rows(folder, records)
            if len(rows) == len(records):
                per_question[system] = scores_of(rows, records)
    comparisons = compare(per_question)
    print(f"\n{args.dataset}, first {len(records)} questions, {args.model}, concurrency {args.concurrency}")
    print(f"{'system':18} {'EM':>6} {'F1':>6} {'Acc':>6} {'errors':>6} {'calls/q':>7} {'queries/q':>9} {'s/q':>6}")
    for system, r in results.items():
        queries = r["distinct_queries_per_question"]
        print(
            f"{system:18} {r['em']:6.3f} {r['f1']:6.3f} {r['acc']:6.3f} {r['errors']:6d} "
            f"{r['lm_calls_per_question']:7.2f} {'-' if queries is None else f'{queries:.2f}':>9} "
            f"{r['seconds_per_question']:6.1f}"
        )
    for pair, by_metric in comparisons.items():
        for metric, c in by_metric.items():
            if c.get("questions"):
                print(
                    f"{pair}, {metric}: {c['mean_diff']:+.3f} [{c['ci95_low']:+.3f}, {c['ci95_high']:+.3f}] "
                    f"(wins {c['wins']}, losses {c['losses']}, P(not better) {c['p_not_better']:.3f})"
                )
    previous = json.loads(out.read_text()) if out.exists() else {}
    same_setup = previous.get("n") == len(records) and previous.get("model") == args.model
    merged = dict(previous.get("systems", {})) if same_setup else {}
    merged.update(results)
    write_results(
        out,
        {
            "benchmark": args.dataset,
            "data": f"../shared/data/{folder_name}, first N questions (see bench_hotpotqa.py)",
            "n": len(records),
            "corpus_passages": len(corpus_rows),
            "model": args.model,
            "threads": args.threads,
            "concurrency": args.concurrency,
            "systems": merged,
            "comparisons": comparisons,
            "bootstrap_samples": BOOTSTRAP_SAMPLES,
        },
    )


if __name__ == "__main__":
    main()
