"""Quality baseline on HotpotQA with the embedded model: EM, F1 and seconds per question.

    .venv/bin/python benchmarks/bench_hotpotqa.py [--n 100] [--systems agentic_rag,closed_book,retrieve_generate]
                                                  [--model local/smollm2] [--concurrency 1] [--fresh]

Questions: the first N of the HotpotQA dev sample in ../shared/data/hotpotqa/dev.jsonl (300
distractor-setting questions from the official dev set; see its SOURCE.md). Corpus: every context
paragraph of the whole dev sample (each question's 10 gold and distractor paragraphs, deduplicated
by title), written as one JSONL file to a temporary folder; it does not depend on N, so a run
with a larger N continues a smaller one.

Systems, all on the same model (the embedded `local/smollm2` by default):
  agentic_rag        pipelines/agentic_rag.flow (retrieve -> reflect -> plan, up to 3 more searches
                     -> generate), a temporary copy pointing at the corpus
  closed_book        benchmarks/specs/closed_book.flow: one call, no retrieval
  retrieve_generate  benchmarks/specs/retrieve_generate.flow: BM25 top 3, one call (a temporary copy
                     pointing at the corpus)

Each system is evaluated with flowc's `evaluate()` and its checkpoint folder
benchmarks/results/hotpotqa/<system>/ (results.jsonl, one line per finished question), so a killed
run continues where it stopped; `--fresh` starts over. A checkpoint made with another model or
another spec text is started over automatically. Writes benchmarks/results/hotpotqa.json and
prints a table. Exits 0 with a message when the data or the model is not on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
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

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hotpotqa"
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = {
    "agentic_rag": ROOT / "pipelines" / "agentic_rag.flow",
    "closed_book": ROOT / "benchmarks" / "specs" / "closed_book.flow",
    "retrieve_generate": ROOT / "benchmarks" / "specs" / "retrieve_generate.flow",
}


def load_questions(data: Path, n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (data / "dev.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    return [{"id": r["id"], "question": r["question"], "answer": r["answer"], "type": r.get("type")} for r in rows[:n]]


def write_corpus(data: Path, out: Path) -> int:
    """Every context paragraph of the dev sample, one JSONL record each, deduplicated by title."""
    seen: dict[str, str] = {}
    for line in (data / "dev.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        ctx = json.loads(line)["context"]
        for title, sentences in zip(ctx["title"], ctx["sentences"], strict=True):
            seen.setdefault(title, "".join(sentences).strip())
    with out.open("w", encoding="utf-8") as fh:
        for title, text in seen.items():
            fh.write(json.dumps({"id": title, "title": title, "text": text}, ensure_ascii=False) + "\n")
    return len(seen)


def spec_for(system: str, corpus: Path, model: str, tmp: Path) -> tuple[Path, str]:
    """A temporary copy of the system's spec with the corpus and the model swapped in; returns its path
    and a fingerprint of the spec text (without the temporary paths) for the checkpoint."""
    source = SYSTEMS[system]
    text = source.read_text(encoding="utf-8")
    fingerprint = hashlib.sha256(f"{text}\n{model}".encode()).hexdigest()[:16]
    for old in ('"data/tiny_wiki.jsonl"', '"../../pipelines/data/tiny_wiki.jsonl"'):
        text = text.replace(old, json.dumps(str(corpus)))
    text = text.replace('"local/smollm2"', json.dumps(model))
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


def run_system(
    system: str, spec: Path, fingerprint: str, records: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    import flowc
    from flowc.runtime.evaluate import bind_metrics, evaluate
    from flowc.runtime.session import open_executor

    compiled = flowc.compile(spec)
    metrics = bind_metrics(compiled.spec.metrics, [], None, None, "answer")
    folder = args.checkpoints / system
    resume = prepare_checkpoint(folder, fingerprint, args.fresh)
    done_before = 0
    if resume and (folder / "results.jsonl").exists():
        ids = {str(r["id"]) for r in records}
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
    ran = len(records) - done_before
    rows = [
        json.loads(line) for line in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    by_id = {str(r["id"]): r for r in rows}
    errors = [
        by_id[str(r["id"])].get("error")
        for r in records
        if str(r["id"]) in by_id and by_id[str(r["id"])]["status"] != "ok"
    ]
    return {
        "spec": str(SYSTEMS[system].relative_to(ROOT)),
        "questions": report["examples"],
        "em": report["metrics"].get("em", 0.0),
        "f1": report["metrics"].get("f1", 0.0),
        "errors": report["errors"],
        "error_examples": sorted({str(e)[:160] for e in errors})[:3],
        "lm_calls_per_question": report["lm_calls"] / max(report["examples"], 1),
        "tokens_per_question": report["tokens"] / max(report["examples"], 1),
        "seconds_per_question": report["seconds_per_example"],
        "resumed_with": done_before,
        "ran_now": ran,
        "wall_s_now": wall,
        "wall_s_per_question_now": wall / ran if ran else None,
        "checkpoint": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(folder),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="questions (the first N of the dev sample, at most 300)")
    ap.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated: " + ", ".join(SYSTEMS))
    ap.add_argument("--model", default="local/smollm2", help="the model every system uses")
    ap.add_argument(
        "--concurrency", type=int, default=1, help="questions in flight (the embedded model decodes one call at a time)"
    )
    ap.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("FLOWC_HOTPOTQA", DEFAULT_DATA)),
        help="the HotpotQA folder (default ../shared/data/hotpotqa, or $FLOWC_HOTPOTQA)",
    )
    ap.add_argument("--checkpoints", type=Path, default=RESULTS / "hotpotqa")
    ap.add_argument("--fresh", action="store_true", help="ignore checkpoints and start over")
    ap.add_argument("--out", type=Path, default=RESULTS / "hotpotqa.json")
    args = ap.parse_args()

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        ap.error(f"unknown system {unknown[0]!r}; choose from {', '.join(SYSTEMS)}")
    if not (args.data / "dev.jsonl").is_file():
        print(
            f"skipped: no HotpotQA dev sample at {args.data / 'dev.jsonl'} "
            "(pass --data or set FLOWC_HOTPOTQA to the folder holding dev.jsonl)"
        )
        return
    if args.model.startswith("local/"):
        from flowc.errors import FlowcError
        from flowc.runtime.local_provider import resolve_model_path

        try:
            resolve_model_path(args.model)
        except FlowcError as e:
            print(f"skipped: the embedded model {args.model} is not installed: {e}")
            return

    records = load_questions(args.data, args.n)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="flowc-hotpotqa-") as tmp_name:
        tmp = Path(tmp_name)
        corpus = tmp / "hotpotqa_dev_paragraphs.jsonl"
        paragraphs = write_corpus(args.data, corpus)
        print(f"HotpotQA dev sample: {len(records)} questions; corpus {paragraphs} paragraphs; model {args.model}")
        for system in systems:
            spec, fingerprint = spec_for(system, corpus, args.model, tmp)
            print(f"{system}: running ({spec.name})", flush=True)
            results[system] = run_system(system, spec, fingerprint, records, args)

    print(f"\nHotpotQA dev, first {len(records)} questions, {args.model}, concurrency {args.concurrency}")
    print(f"{'system':20} {'EM':>6} {'F1':>6} {'errors':>6} {'calls/q':>7} {'tokens/q':>8} {'s/q':>7}")
    for system, r in results.items():
        print(
            f"{system:20} {r['em']:6.3f} {r['f1']:6.3f} {r['errors']:6d} {r['lm_calls_per_question']:7.2f} "
            f"{r['tokens_per_question']:8.0f} {r['seconds_per_question']:7.1f}"
        )
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    merged = dict(previous.get("systems", {})) if previous.get("n") == len(records) else {}
    merged.update(results)
    write_results(
        args.out,
        {
            "benchmark": "hotpotqa",
            "data": "HotpotQA dev sample (../shared/data/hotpotqa/dev.jsonl), first N questions",
            "n": len(records),
            "corpus_paragraphs": paragraphs,
            "model": args.model,
            "concurrency": args.concurrency,
            "systems": merged,
        },
    )


if __name__ == "__main__":
    main()
