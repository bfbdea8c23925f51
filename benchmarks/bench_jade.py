"""JADE on HotpotQA with the embedded model as the shared backbone: EM/F1 before and after training.

    .venv/bin/python benchmarks/bench_jade.py [--n-test 100] [--n-train 300] [--n-val 12] [--seeds 0]
        [--rounds 3] [--weight-steps 4] [--prompt-steps 0] [--batch-size 4] [--group-size 2]
        [--sentences 2] [--max-tokens 32] [--set NAME=VALUE ...] [--budget-seconds S] [--fresh]

What it does, every part checkpointed under --work (default benchmarks/results/jade/), so a killed
run continues where it stopped (rerun the same command):

Parts (`--phase`; `all` runs them in order, and two parts may run at once in two processes):

1. a corpus of every context paragraph of ../shared/data/hotpotqa/train.jsonl and dev.jsonl
   (deduplicated by title, each cut to its first --sentences sentences), and copies of
   pipelines/jade_workflow.flow and benchmarks/specs/closed_book.flow pointing at it;
2. the test slice: the first --n-test questions of dev.jsonl (fixed), scored for the closed-book
   system and the untrained pipeline ("before");
3. per seed, `flowc optimize -O jade` (the Python API, resumable in its run directory): training
   questions from train.jsonl (the first --n-train), the validation gate on dev.jsonl questions
   --n-test .. --n-test + --n-val (disjoint from the test slice);
4. the trained pipeline (the patch: adapter, and prompts if prompt rounds ran) on the test slice
   ("after").

Writes benchmarks/results/jade.json (f1/em before and after, the paired bootstrap interval of the
F1 and EM differences over the test questions, the spread over seeds, closed-book, LM calls,
tokens and wall time of each part) and the learning curve (mean rollout reward per PPO update)
as benchmarks/results/jade_curve.json and jade_curve.png (the PNG needs matplotlib: the `bench`
extra). Exits 0 with a message when the data, the model or jax is missing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import shared_data, write_results  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def qa_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "question": r["question"], "answer": r["answer"], "type": r.get("type")} for r in rows]


def write_corpus(sources: list[Path], out: Path, sentences: int) -> int:
    """Every context paragraph of the files, deduplicated by title, cut to `sentences` sentences."""
    seen: dict[str, str] = {}
    for src in sources:
        for row in read_jsonl(src):
            ctx = row["context"]
            for title, sents in zip(ctx["title"], ctx["sentences"], strict=True):
                text = "".join(sents[:sentences]).strip() if sentences > 0 else "".join(sents).strip()
                seen.setdefault(title, text)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for title, text in seen.items():
            fh.write(json.dumps({"id": title, "title": title, "text": text}, ensure_ascii=False) + "\n")
    tmp.replace(out)
    return len(seen)


def spec_copy(source: Path, corpus: Path, model: str, max_tokens: int | None, dest: Path) -> Path:
    text = source.read_text(encoding="utf-8").replace('"data/tiny_wiki.jsonl"', json.dumps(str(corpus)))
    text = text.replace('"local/smollm2"', json.dumps(model))
    if max_tokens is not None:
        text = re.sub(r"max_tokens: \d+", f"max_tokens: {max_tokens}", text)
    if dest.exists() and dest.read_text(encoding="utf-8") != text:
        raise SystemExit(f"{dest} holds another setup: pass --fresh or another --work")
    dest.write_text(text, encoding="utf-8")
    return dest


def evaluate_on(compiled: Any, records: list[dict[str, Any]], folder: Path, label: str) -> dict[str, Any]:
    """flowc's checkpointed evaluation (greedy, as served); returns the report and per-question scores."""
    from flowc.runtime.evaluate import bind_metrics, evaluate
    from flowc.runtime.session import open_executor

    metrics = bind_metrics(compiled.spec.metrics, ["f1", "exact_match"], "answer", "answer", "answer")
    folder.mkdir(parents=True, exist_ok=True)
    executor = open_executor(compiled, cache=False, store=False)
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if done == total or time.monotonic() - last[0] > 60:
            last[0] = time.monotonic()
            print(f"  {label}: {done}/{total} questions", flush=True)

    t0 = time.perf_counter()
    report = asyncio.run(evaluate(executor, records, metrics, folder, concurrency=1, resume=True, on_progress=progress))
    rows = {str(r["id"]): r for r in read_jsonl(folder / "results.jsonl")}
    per_q = [rows[str(r["id"])] for r in records]
    scores = {
        "f1": [float((q.get("scores") or {}).get("f1", 0.0)) for q in per_q],
        "em": [float((q.get("scores") or {}).get("exact_match", 0.0)) for q in per_q],
    }
    return {
        "questions": report["examples"],
        "f1": statistics.fmean(scores["f1"]),
        "em": statistics.fmean(scores["em"]),
        "errors": report["errors"],
        "lm_calls": report["lm_calls"],
        "tokens": report["tokens"],
        "seconds_per_question": report["seconds_per_example"],
        "wall_s_this_session": time.perf_counter() - t0,
        "per_question": scores,
    }


def paired_bootstrap(after: list[float], before: list[float], seed: int = 0, n: int = 10_000) -> dict[str, float]:
    """Mean difference after − before and its 95% percentile interval over resampled questions."""
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    rng = random.Random(seed)
    k = len(diffs)
    means = sorted(statistics.fmean(rng.choices(diffs, k=k)) for _ in range(n))
    return {
        "mean": statistics.fmean(diffs),
        "ci95_low": means[int(0.025 * n)],
        "ci95_high": means[int(0.975 * n) - 1],
        "p_le_zero": sum(1 for m in means if m <= 0) / n,
        "improved": sum(1 for d in diffs if d > 0),
        "worsened": sum(1 for d in diffs if d < 0),
    }


def train(
    spec: Path, trainset: list[dict[str, Any]], valset: list[dict[str, Any]], seed: int, args: argparse.Namespace
) -> tuple[Any, dict[str, Any]]:
    import flowc
    from flowc.optimizers.budget import Budget
    from flowc.optimizers.factory import make_clients, make_optimizer, parse_settings, preferred_optimizer_model
    from flowc.optimizers.progress import plain_progress
    from flowc.optimizers.scoring import metric_from_spec

    compiled = flowc.compile(spec)
    run_dir = args.work / f"seed{seed}" / "run"
    settings = {
        "rounds": args.rounds,
        "weight_steps": args.weight_steps,
        "prompt_steps": args.prompt_steps,
        "batch_size": args.batch_size,
        "group_size": args.group_size,
        **parse_settings("jade", args.set),
    }
    clients = make_clients(compiled, args.optimizer_model or preferred_optimizer_model("jade"))
    optimizer = make_optimizer(
        "jade", clients, resume=(run_dir / "job.json").exists(), settings=settings, progress=plain_progress(sys.stdout)
    )
    t0 = time.perf_counter()
    patch = optimizer.optimize(
        compiled,
        trainset=trainset,
        valset=valset,
        metric=metric_from_spec(compiled),
        budget=Budget(seconds=args.budget_seconds),
        seed=seed,
        run_dir=run_dir,
    )
    patch.save(run_dir / "patch.json")
    state = json.loads((run_dir / "state.json").read_text(encoding="utf-8"))
    info = {
        "run_dir": str(run_dir.relative_to(ROOT)) if run_dir.is_relative_to(ROOT) else str(run_dir),
        "settings": optimizer.settings(),
        "critic": clients.optimizer_model,
        "patch_params": sorted(patch.params),
        "scores": patch.scores,
        "budget_used": patch.budget_used,
        "stopped_by": patch.stopped_by,
        "wall_s_this_session": time.perf_counter() - t0,
        "curve": state.get("curve", []),
    }
    return patch.apply(compiled), info


def plot_curve(curves: dict[int, list[dict[str, Any]]], out: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ModuleNotFoundError:
        print("  (no matplotlib: install the `bench` extra for the PNG; the curve is in the JSON)")
        return False
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=120)
    for seed, rows in curves.items():
        xs = [r["update"] for r in rows]
        ax.plot(xs, [r["outcome"] for r in rows], marker="o", label=f"seed {seed}: rollout F1")
        ax.plot(
            xs, [r["reward"] for r in rows], linestyle="--", alpha=0.6, label=f"seed {seed}: reward incl. penalties"
        )
    ax.set_xlabel("PPO update")
    ax.set_ylabel("mean per update")
    ax.set_title("JADE on HotpotQA (SmolLM2-135M, rollouts at temperature 1)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-test", type=int, default=100, help="the test slice: the first N dev questions")
    ap.add_argument("--n-train", type=int, default=300, help="training questions: the first N of train.jsonl")
    ap.add_argument(
        "--n-val", type=int, default=12, help="validation-gate questions, after the test slice in dev.jsonl"
    )
    ap.add_argument("--seeds", default="0", help="comma-separated training seeds")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--weight-steps", type=int, default=4, help="PPO updates per round")
    ap.add_argument("--prompt-steps", type=int, default=0, help="TextGrad steps per round (0: weights only)")
    ap.add_argument("--batch-size", type=int, default=4, help="questions per PPO update")
    ap.add_argument("--group-size", type=int, default=2, help="rollouts per question")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="any other jade setting")
    ap.add_argument("--optimizer-model", help="the critic of the prompt rounds")
    ap.add_argument("--sentences", type=int, default=2, help="sentences kept of each paragraph (0: all)")
    ap.add_argument("--max-tokens", type=int, help="the backbone's max_tokens in the benchmark's spec copy")
    ap.add_argument("--model", default="local/smollm2", help="the shared backbone")
    ap.add_argument("--budget-seconds", type=float, help="a time budget per training run (all its sessions)")
    ap.add_argument("--skip-closed-book", action="store_true")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("FLOWC_HOTPOTQA", shared_data("hotpotqa"))))
    ap.add_argument("--work", type=Path, default=RESULTS / "jade")
    ap.add_argument("--out", type=Path, default=RESULTS / "jade.json")
    ap.add_argument("--fresh", action="store_true", help="delete --work first")
    ap.add_argument(
        "--phase",
        default="all",
        choices=("all", "baseline", "train", "after", "report"),
        help="run one part (each resumable): baseline (closed-book, untrained), train, after (train + test), "
        "report (from the checkpoints)",
    )
    args = ap.parse_args()

    if not (args.data / "dev.jsonl").is_file() or not (args.data / "train.jsonl").is_file():
        print(f"skipped: no HotpotQA train/dev samples in {args.data} (pass --data or set FLOWC_HOTPOTQA)")
        return
    try:
        import jax  # noqa: F401

        from flowc.runtime.local_provider import resolve_model_path

        resolve_model_path(args.model)
    except Exception as e:  # a missing extra or model: say so and stop
        print(f"skipped: {e}")
        return
    if args.fresh and args.work.exists():
        import shutil

        shutil.rmtree(args.work)
    args.work.mkdir(parents=True, exist_ok=True)

    dev = qa_rows(read_jsonl(args.data / "dev.jsonl"))
    test, val = dev[: args.n_test], dev[args.n_test : args.n_test + args.n_val]
    trainset = qa_rows(read_jsonl(args.data / "train.jsonl"))[: args.n_train]
    corpus = args.work / "corpus.jsonl"
    if not corpus.exists():
        n = write_corpus([args.data / "train.jsonl", args.data / "dev.jsonl"], corpus, args.sentences)
        print(f"corpus: {n} paragraphs (first {args.sentences or 'all'} sentences) -> {corpus}")
    digest = hashlib.sha256(corpus.read_bytes()).hexdigest()[:12]
    pipeline = spec_copy(
        ROOT / "pipelines" / "jade_workflow.flow", corpus, args.model, args.max_tokens, args.work / "jade_workflow.flow"
    )
    closed = spec_copy(
        ROOT / "benchmarks" / "specs" / "closed_book.flow", corpus, args.model, None, args.work / "closed_book.flow"
    )

    import flowc

    results: dict[str, Any] = {
        "benchmark": "jade",
        "data": "HotpotQA samples (../shared/data/hotpotqa): train.jsonl for training, dev.jsonl[:n_test] for the test",
        "n_test": len(test),
        "n_train": len(trainset),
        "n_val": len(val),
        "model": args.model,
        "corpus": {"paragraphs_sentences": args.sentences, "sha256_12": digest},
        "command": " ".join([".venv/bin/python", "benchmarks/bench_jade.py", *sys.argv[1:]]),
    }
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    print(
        f"test slice: dev[:{len(test)}]; validation dev[{args.n_test}:{args.n_test + len(val)}]; train {len(trainset)}"
    )
    if args.phase in ("all", "baseline", "report"):
        if not args.skip_closed_book:
            results["closed_book"] = evaluate_on(flowc.compile(closed), test, args.work / "closed_book", "closed-book")
        results["untrained"] = evaluate_on(flowc.compile(pipeline), test, args.work / "before", "untrained pipeline")
    runs: dict[int, Any] = {}
    for seed in seeds if args.phase != "baseline" else ():
        print(f"training, seed {seed} (resumes from its run directory)", flush=True)
        patched, info = train(pipeline, trainset, val, seed, args)
        runs[seed] = info
        if args.phase == "train":
            continue
        info["after"] = after = evaluate_on(
            patched, test, args.work / f"seed{seed}" / "after", f"trained (seed {seed})"
        )
        if "untrained" in results:
            before = results["untrained"]["per_question"]
            info["f1_paired"] = paired_bootstrap(after["per_question"]["f1"], before["f1"], seed)
            info["em_paired"] = paired_bootstrap(after["per_question"]["em"], before["em"], seed)
    if args.phase in ("all", "report"):
        report(results, runs, seeds, args)


def report(results: dict[str, Any], runs: dict[int, Any], seeds: list[int], args: argparse.Namespace) -> None:
    before = results["untrained"]
    results["runs"] = {str(k): v for k, v in runs.items()}
    f1s = [r["after"]["f1"] for r in runs.values()]
    ems = [r["after"]["em"] for r in runs.values()]
    results.update(
        f1_before=before["f1"],
        em_before=before["em"],
        f1_after=statistics.fmean(f1s),
        em_after=statistics.fmean(ems),
        f1_after_seeds=f1s,
        em_after_seeds=ems,
        f1_after_sd=statistics.stdev(f1s) if len(f1s) > 1 else None,
        f1_diff_ci95=[runs[seeds[0]]["f1_paired"]["ci95_low"], runs[seeds[0]]["f1_paired"]["ci95_high"]],
        em_diff_ci95=[runs[seeds[0]]["em_paired"]["ci95_low"], runs[seeds[0]]["em_paired"]["ci95_high"]],
    )
    curves = {seed: r["curve"] for seed, r in runs.items()}
    write_results(
        args.out.with_name(args.out.stem + "_curve.json"),
        {"benchmark": "jade learning curve", "curves": {str(k): v for k, v in curves.items()}},
    )
    results["curve_png"] = plot_curve(curves, args.out.with_name(args.out.stem + "_curve.png"))
    write_results(args.out, results)
    print(f"\nHotpotQA dev[:{results['n_test']}], {args.model}")
    if "closed_book" in results:
        print(f"  closed-book          F1 {results['closed_book']['f1']:.3f}  EM {results['closed_book']['em']:.3f}")
    print(f"  untrained pipeline   F1 {before['f1']:.3f}  EM {before['em']:.3f}")
    for seed, r in runs.items():
        p = r["f1_paired"]
        print(
            f"  JADE seed {seed}          F1 {r['after']['f1']:.3f}  EM {r['after']['em']:.3f}  "
            f"(ΔF1 {p['mean']:+.3f}, 95% CI [{p['ci95_low']:+.3f}, {p['ci95_high']:+.3f}])"
        )


if __name__ == "__main__":
    main()
