"""POQD on HotpotQA: the question alone, a hand-written decomposition prompt (ICL-QD) and POQD.

    .venv/bin/python benchmarks/bench_poqd.py [--n 100] [--n-train 40] [--n-val 20] [--systems question,icl_qd,poqd]
        [--decomposer local/qwen-coder-1.5b] [--reader local/smollm2] [--set NAME=VALUE ...] [--fresh]
    .venv/bin/python benchmarks/bench_poqd.py --write-corpus pipelines/data/hotpotqa_poqd.jsonl

Data: the HotpotQA dev sample in ../shared/data/hotpotqa/dev.jsonl (300 distractor-setting
questions of the official dev set; see its SOURCE.md) and its 2,966 context paragraphs, the corpus
bench_hotpotqa.py and bench_retrieval.py use. Questions [0, n) are the evaluation slice; POQD trains
on questions [100, 100 + n_train) and gates on the next n_val, whose paragraphs are in the same
corpus, so no system sees an evaluation question before it is scored.

Systems (same corpus, same MaxSim retrieval of the top 2 paragraphs, same reader prompt):

- `question`: the question is the only sub-query (no decomposition); the reader as shipped.
- `icl_qd`: the paper's ICL-QD baseline: the decomposer (`--decomposer`) with a hand-written
  decomposition prompt and three worked examples (demos), the hallucination filter; the reader as
  shipped.
- `poqd`: `flowc optimize -O poqd` on the training questions, starting from the template prompt of
  pipelines/poqd_decompose.flow (no demos); then the searched prompt with the trained reader
  (LoRA on the jax backbone: POQD's `reader.weights`, copied beside the result spec and named by
  its reader's `adapter:`, served by llama.cpp over the base GGUF). `--set` passes POQD's
  settings (alpha, tau, kappa, max_rounds, final_steps, batch_size, ...).

Reported per system on the evaluation slice: Hit@2 (at least one gold paragraph in the top 2),
Both@2 (both), Recall@2, answer EM and F1, with 95% bootstrap intervals, and paired bootstrap
intervals of each difference between systems (10,000 resamples of the questions, seed 0); the
budget: LM calls, tokens and wall time of the evaluation, and for POQD the optimization's as well.

Everything is checkpointed under --work (default benchmarks/results/poqd/): each system's
evaluation per question (flowc's evaluate), and POQD's optimization run directory (resumed with
its journal and generator state), so a killed run continues where it stopped. Writes
benchmarks/results/poqd.json. Exits 0 with a message when the data or a model is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import shared_data, write_results  # noqa: E402

SYSTEMS = ("question", "icl_qd", "poqd")
TRAIN_START = 100  # training questions come after the largest evaluation slice

READ_PROMPT = '''"""
      Passages:
      {{docs}}

      Question: {{question}}
      Answer in a few words.
      """'''
# The template POQD starts from: pipelines/poqd_decompose.flow's decomposer prompt.
TEMPLATE_PROMPT = '''"""
      Decompose the query into short sub-queries made only of words from the query, one per line,
      each in <q>...</q> tags.
      Query: {{question}}
      """'''
# ICL-QD: a hand-written prompt with worked examples (three HotpotQA *train* questions, so none is
# in the dev sample).
ICL_PROMPT = '''"""
      Split the question into short search queries, one per line: one for each person, work, place
      or fact the question needs. Use only words from the question.
      Question: {{question}}
      """'''
ICL_DEMOS = """
    demo {question: "Which magazine was started first, Arthur's Magazine or First for Women?", subqueries: ["Arthur's Magazine started", "First for Women started"]}
    demo {question: "The Oberoi family is part of a hotel company that has a head office in what city?", subqueries: ["Oberoi family hotel company", "hotel company head office city"]}
    demo {question: "What government position was held by the woman who portrayed Corliss Archer in the film Kiss and Tell?", subqueries: ["woman who portrayed Corliss Archer in Kiss and Tell", "government position held by the woman"]}"""  # noqa: E501

HEAD = """pipeline hotpot_{name} {{
  input question: str
  output answer: str <- read.answer
  output docs: list[Doc] <- search.docs
{outputs}
  model reader = {reader} {{
    max_tokens: 32
    timeout: 1800
{trainable}  }}
{decomposer_model}
  corpus wiki = "corpus.jsonl"
{decompose}
  node search: retrieve {{
    corpus: wiki
    method: maxsim
    k: 2
{search}
  }}

  node read: llm {{
    model: reader
    prompt: {read_prompt}
    question <- question
    docs <- search.docs
    output answer: str
  }}

  metric em: exact_match(output = answer, target = answer)
  metric f1: f1(output = answer, target = answer)
}}
"""
DECOMPOSE = """
  node decompose: llm {{
    model: decomposer
    prompt: {prompt}
    format: tagged
    question <- question
    output subqueries: list[str]{demos}
  }}
"""


def spec_text(system: str, decomposer: str, reader: str, prompt: str | None = None, adapter: str | None = None) -> str:
    """The .flow text of a system (`prompt` replaces the decomposer prompt, as a quoted string;
    `adapter` is the reader's, relative to the spec's folder)."""
    if system == "question":
        parts = {"outputs": "", "decomposer_model": "", "decompose": "", "search": "    query <- question"}
    else:
        text = prompt or (ICL_PROMPT if system == "icl_qd" else TEMPLATE_PROMPT)
        parts = {
            "outputs": "  output subqueries: list[str] <- decompose.subqueries",
            "decomposer_model": f"  model decomposer = {json.dumps(decomposer)} {{\n"
            "    max_tokens: 64\n    timeout: 1800\n  }",
            "decompose": DECOMPOSE.format(prompt=text, demos=ICL_DEMOS if system == "icl_qd" else ""),
            "search": "    filter_subqueries: true\n    queries <- decompose.subqueries\n    query <- question",
        }
    return HEAD.format(
        name=system,
        reader=json.dumps(reader),
        trainable=("    trainable: true\n" if system == "poqd" else "")
        + (f"    adapter: {json.dumps(adapter)}\n" if adapter else ""),
        read_prompt=READ_PROMPT,
        **parts,
    )


def load_rows(data: Path) -> list[dict[str, Any]]:
    rows = [json.loads(x) for x in (data / "dev.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    return [
        {
            "id": r["id"],
            "question": r["question"],
            "answer": r["answer"],
            "gold": list(dict.fromkeys(r["supporting_facts"]["title"])),
        }
        for r in rows
    ]


def write_corpus(files: list[Path], out: Path) -> int:
    """Every context paragraph of the given HotpotQA files, one JSONL record each, deduplicated by
    title (the first occurrence's text), ids = titles (as bench_hotpotqa.py writes them)."""
    seen: dict[str, str] = {}
    for f in files:
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ctx = json.loads(line)["context"]
                for title, sentences in zip(ctx["title"], ctx["sentences"], strict=True):
                    seen.setdefault(title, "".join(sentences).strip())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for title, text in seen.items():
            fh.write(json.dumps({"id": title, "title": title, "text": text}, ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return len(seen)


# -- evaluation ---------------------------------------------------------------------------------------


def evaluate_system(spec: Path, records: list[dict[str, Any]], folder: Path, fresh: bool) -> dict[str, Any]:
    """flowc's checkpointed evaluation of one spec; returns the per-question rows and the totals."""
    import flowc
    from flowc.runtime.evaluate import bind_metrics, evaluate
    from flowc.runtime.session import open_executor

    compiled = flowc.compile(spec)
    metrics = bind_metrics(compiled.spec.metrics, [], None, None, "answer")
    executor = open_executor(compiled, cache=False, store=False)
    last = [0.0]

    def progress(done: int, total: int, *_: Any) -> None:
        if done == total or time.monotonic() - last[0] > 60:
            last[0] = time.monotonic()
            print(f"  {spec.stem}: {done}/{total} questions", flush=True)

    t0 = time.perf_counter()
    inputs = [{"id": r["id"], "question": r["question"], "answer": r["answer"]} for r in records]
    report = asyncio.run(
        evaluate(executor, inputs, metrics, folder, concurrency=1, resume=not fresh, on_progress=progress)
    )
    rows = {
        json.loads(x)["id"]: json.loads(x)
        for x in (folder / "results.jsonl").read_text(encoding="utf-8").splitlines()
        if x.strip()
    }
    return {"rows": rows, "report": report, "wall_s_now": time.perf_counter() - t0}


def retrieval_scores(row: dict[str, Any], gold: list[str]) -> dict[str, float]:
    docs = [d.get("id") for d in ((row.get("outputs") or {}).get("docs") or [])][:2]
    found = [g for g in gold if g in docs]
    return {
        "hit@2": float(bool(found)),
        "both@2": float(len(found) == len(gold)),
        "recall@2": len(found) / len(gold) if gold else 0.0,
    }


def per_question(result: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in ("hit@2", "both@2", "recall@2", "em", "f1")}
    for r in records:
        row = result["rows"][r["id"]]
        ok = row["status"] == "ok"
        scores = retrieval_scores(row, r["gold"]) if ok else {"hit@2": 0.0, "both@2": 0.0, "recall@2": 0.0}
        for k, v in scores.items():
            out[k].append(v)
        out["em"].append(float(row["scores"].get("em", 0.0)))
        out["f1"].append(float(row["scores"].get("f1", 0.0)))
    return out


def bootstrap(values: list[float], other: list[float] | None = None, n: int = 10_000) -> list[float]:
    """95% percentile interval of the mean (or of the mean paired difference with `other`)."""
    diffs = values if other is None else [a - b for a, b in zip(values, other, strict=True)]
    rng = random.Random(0)
    k = len(diffs)
    means = sorted(sum(diffs[rng.randrange(k)] for _ in range(k)) / k for _ in range(n))
    return [round(means[int(0.025 * n)], 4), round(means[int(0.975 * n) - 1], 4)]


# -- POQD ---------------------------------------------------------------------------------------------


def run_poqd(
    spec: Path, train: list[dict[str, Any]], val: list[dict[str, Any]], args: argparse.Namespace
) -> dict[str, Any]:
    """`flowc optimize -O poqd` on the training questions (resumed when the run directory holds a job)."""
    import flowc
    from flowc.optimizers.budget import Budget
    from flowc.optimizers.factory import make_clients, make_optimizer, parse_settings
    from flowc.optimizers.progress import ProgressEvent, render_line
    from flowc.optimizers.scoring import metric_from_spec

    compiled = flowc.compile(spec)
    run_dir = args.work / "run"
    resume = (run_dir / "state.json").is_file()
    clients = make_clients(compiled, args.decomposer)

    def progress(e: ProgressEvent) -> None:
        print("  " + render_line(e), flush=True)

    opt = make_optimizer("poqd", clients, resume=resume, settings=parse_settings("poqd", args.set), progress=progress)
    t0 = time.perf_counter()
    patch = opt.optimize(
        compiled,
        trainset=[{"question": r["question"], "answer": r["answer"]} for r in train],
        valset=[{"question": r["question"], "answer": r["answer"]} for r in val],
        metric=metric_from_spec(compiled, "em"),
        budget=Budget(seconds=args.budget_seconds),
        seed=0,
        run_dir=run_dir,
    )
    patch.save(run_dir / "patch.json")
    state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    return {"patch": patch, "state": state, "wall_s_now": time.perf_counter() - t0, "run_dir": run_dir}


def trained_reader(spec: Path, adapter: dict[str, Any], run_dir: Path) -> str:
    """POQD's last published reader adapter (its `reader.weights`, whether or not the gate kept it),
    copied with its served GGUF to `adapters/` beside `spec` (as `flowc optimize --write` does);
    returns the path the spec's `adapter:` names."""
    import flowc
    from flowc.optimizers.base import ParamPatch
    from flowc.optimizers.writeback import copy_adapters

    compiled = flowc.compile(spec)
    value = {"path": str(run_dir / adapter["path"]), "sha256": adapter["sha256"]}
    patch = ParamPatch(
        pipeline=compiled.name, base_hash=compiled.hash, optimizer="poqd", seed=0, params={"reader.weights": value}
    )
    return str(copy_adapters(patch, compiled, spec.parent).params["reader.weights"]["path"])


def quoted(prompt: str) -> str:
    return json.dumps(prompt, ensure_ascii=False)


# -- main ----------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=shared_data("hotpotqa"))
    ap.add_argument("--n", type=int, default=100, help="evaluation questions: the first N of the dev sample")
    ap.add_argument("--n-train", type=int, default=40, help="POQD's training questions (from question 100 on)")
    ap.add_argument("--n-val", type=int, default=20, help="POQD's validation questions (after the training ones)")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--decomposer", default="local/qwen-coder-1.5b", help="decomposer and optimizer LLM")
    ap.add_argument("--reader", default="local/smollm2", help="the reader (the generator POQD trains)")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a POQD setting")
    ap.add_argument("--budget-seconds", type=float, default=None, help="POQD's time budget")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "results" / "poqd")
    ap.add_argument("--fresh", action="store_true", help="evaluate again (POQD's run resumes unless --work changes)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "poqd.json")
    ap.add_argument("--write-corpus", type=Path, help="only write the train+dev+test paragraphs corpus there")
    args = ap.parse_args()
    if not (args.data / "dev.jsonl").is_file():
        print(f"skipped: no HotpotQA dev sample at {args.data / 'dev.jsonl'}")
        return 0
    if args.write_corpus:
        files = [args.data / f for f in ("train.jsonl", "dev.jsonl", "test.jsonl") if (args.data / f).is_file()]
        print(f"wrote {write_corpus(files, args.write_corpus)} paragraphs to {args.write_corpus}")
        return 0
    from flowc.errors import FlowcError
    from flowc.runtime.local_provider import resolve_model_path

    systems = [s for s in args.systems.split(",") if s]
    for model in {args.reader, *([args.decomposer] if set(systems) - {"question"} else [])}:
        try:
            resolve_model_path(model)
        except FlowcError as e:
            print(f"skipped: the embedded model {model} is not installed: {e}")
            return 0
    rows = load_rows(args.data)
    evals = rows[: args.n]
    train = rows[TRAIN_START : TRAIN_START + args.n_train]
    val = rows[TRAIN_START + args.n_train : TRAIN_START + args.n_train + args.n_val]
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    paragraphs = write_corpus([args.data / "dev.jsonl"], work / "corpus.jsonl")
    print(f"HotpotQA dev: evaluation {len(evals)}, POQD train {len(train)} / val {len(val)}; {paragraphs} paragraphs")

    results: dict[str, Any] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    poqd_info: dict[str, Any] = {}
    for system in systems:
        spec = work / f"{system}.flow"
        spec.write_text(spec_text(system, args.decomposer, args.reader), encoding="utf-8")
        if system == "poqd":
            print("poqd: optimizing", flush=True)
            opt = run_poqd(spec, train, val, args)
            st, patch = opt["state"], opt["patch"]
            prompt = f"{st['prefix']}\n\n{st['template']}" if st["prefix"] else st["template"]
            adapter = trained_reader(spec, st["adapter"], opt["run_dir"]) if st.get("adapter") else None
            spec = work / "poqd_result.flow"
            text = spec_text("poqd", args.decomposer, args.reader, quoted(prompt), adapter=adapter)
            spec.write_text(text, encoding="utf-8")
            poqd_info = {
                "searched_prefix": st["prefix"],
                "adapter": st.get("adapter"),
                "gate_kept": bool(patch.params),
                "scores": patch.scores,
                "losses": st.get("losses"),
                "optimization_budget": patch.budget_used,
                "stopped_by": patch.stopped_by,
                "optimization_wall_s_now": round(opt["wall_s_now"], 1),
                "settings": json.loads((opt["run_dir"] / "job.json").read_text())["settings"],
            }
        fingerprint = hashlib.sha256(spec.read_text(encoding="utf-8").encode()).hexdigest()[:12]
        print(f"{system}: evaluating ({fingerprint})", flush=True)
        result = evaluate_system(spec, evals, work / "eval" / system, args.fresh)
        scores[system] = per_question(result, evals)
        rep = result["report"]
        results[system] = {
            **{k: round(sum(v) / len(v), 4) for k, v in scores[system].items()},
            "ci95": {k: bootstrap(v) for k, v in scores[system].items()},
            "errors": rep["errors"],
            "lm_calls": rep["lm_calls"],
            "tokens": rep["tokens"],
            "wall_s": round(rep["seconds_total"], 1),
            "spec": str(spec.relative_to(ROOT)) if spec.is_relative_to(ROOT) else str(spec),
        }
    paired = {}
    names = list(scores)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            paired[f"{b} - {a}"] = {k: bootstrap(scores[b][k], scores[a][k]) for k in scores[a]}
    head = ("system", "Hit@2", "Both@2", "R@2", "EM", "F1", "calls", "tokens", "wall s")
    print("\n" + f"{head[0]:10} " + " ".join(f"{h:>6}" for h in head[1:7]) + f" {head[7]:>8} {head[8]:>8}")
    for s, r in results.items():
        print(
            f"{s:10} {r['hit@2']:6.3f} {r['both@2']:6.3f} {r['recall@2']:6.3f} {r['em']:6.3f} {r['f1']:6.3f}"
            f" {r['lm_calls']:6d} {r['tokens']:8d} {r['wall_s']:8.0f}"
        )
    for k, v in paired.items():
        print(f"  {k}: " + ", ".join(f"{m} [{lo:+.3f}, {hi:+.3f}]" for m, (lo, hi) in v.items()))
    write_results(
        args.out,
        {
            "benchmark": "poqd",
            "data": "HotpotQA dev sample (../shared/data/hotpotqa/dev.jsonl): evaluation = first N questions, "
            f"POQD train = questions {TRAIN_START}..{TRAIN_START + len(train) - 1}, val = the next {len(val)}",
            "n": len(evals),
            "n_train": len(train),
            "n_val": len(val),
            "corpus_paragraphs": paragraphs,
            "decomposer_and_optimizer": args.decomposer,
            "reader": args.reader,
            "retrieval": "MaxSim (all-MiniLM-L6-v2 int8, sentence segments with the title), top 2",
            "systems": results,
            "paired_bootstrap_95": paired,
            "poqd": poqd_info,
            "command": " ".join(sys.argv),
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
