"""Do the optimizers make pipelines better? Held-out gains of every registered optimizer with the
local models, at equal budgets, fixed seeds and fixed splits.

    nice -n 19 .venv/bin/python benchmarks/bench_quality.py [--tasks bbh,hotpotqa[,pubmedqa,depth2,depth4,depth8]]
        [--optimizers all|bootstrap,textgrad,tep,...] [--seeds 0[,1,2]]
        [--task-lm local/qwen-coder-0.5b] [--critic-lm local/qwen-coder-1.5b]
        [--hotpotqa-spec pipelines/agentic_rag.flow] [--n-train 20] [--n-val 20] [--n-test 100]
        [--budget-calls 600] [--budget-tokens 1500000] [--steps N] [--batch-size 3] [--set NAME=VALUE]
        [--timeout 3600] [--results-dir benchmarks/results/quality] [--out benchmarks/results/quality.json]

Tasks (data under ../shared/data, see each folder's SOURCE.md):
  bbh        BBH object counting, one llm node whose system prompt is TextGrad's zero-shot CoT
             instruction (its `{{question}}` template is frozen); train = examples[:50], val =
             [50:150], test = [150:] (TextGrad's splits), each cut to --n-train/--n-val/--n-test;
             metric last_integer.
  hotpotqa   the spec given by --hotpotqa-spec (default pipelines/agentic_rag.flow), every model set
             to --task-lm and every corpus to the context paragraphs of the HotpotQA dev and train
             samples (written once to the results folder); test = the first --n-test questions of
             dev.jsonl (the fixed 100-question slice by default), train and val = consecutive slices
             of train.jsonl; optimized on token F1, reported as F1 and EM.
  pubmedqa   pipelines/pubmedqa.flow with every model set to --task-lm; train/val from the train
             file, test from the test file (seeded shuffle 0, as bench_pubmedqa.py); accuracy.
  depthN     `deep_chain(N)` (a drafter and N-1 refiners) on BBH object counting's splits, metric
             last_integer: the depth protocol (feedback tokens reaching the first node, score gain
             per depth), e.g. depth2,depth4,depth8.

Every optimizer gets the same budget (`--budget-calls`, `--budget-tokens`, pipeline and optimizer
calls together, the validation baseline included), the same seeds, the same splits (fixed: they do
not depend on the seed), `--steps`/`--batch-size` where it has them, and `--critic-lm` as its own
model. Every model of the task's spec gets `--timeout` seconds per call (a timed-out call fails its
run, which scores 0: on a loaded CPU the specs' own timeouts would turn latency into "quality").
`--optimizers all` takes every registered optimizer (built-in or from the `flowc.plugins`
entry point), so new ones (jade, poqd, gepa, dspy's) join without a change here; one that cannot run a
task (no param of its kind, a missing extra) is reported as an error for that unit.

Per (task, optimizer, seed) — a unit — it reports: validation before/after; test score before/after on
the same examples with a 95 % paired bootstrap interval of the gain; LM calls and tokens spent
(pipeline and optimizer, as the model reported them); updates, effective updates and their rate;
wall time; the changed params; for depth tasks the feedback reaching the first node (tokens of the
task model's tokenizer). Each unit keeps its folder under --results-dir/<task>/<optimizer>-s<seed>/:
the optimizer's run directory (run/: journals, checkpoints), the patch, the optimized prompts
(prompts.json, optimized.flow) and the test evaluation (test_after/, one line per finished example);
a killed run rerun with the same command continues every unit where it stopped (a finished unit is
read back, not rerun). The summary (--out) is rewritten after every unit from every task and unit
in --results-dir, so separate invocations (one task each, say) add up.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import machine, shared_data, write_results  # noqa: E402

import flowc  # noqa: E402
from flowc.compile import CompiledPipeline  # noqa: E402
from flowc.errors import FlowcError  # noqa: E402
from flowc.optimizers.budget import Budget  # noqa: E402
from flowc.optimizers.factory import known_settings, make_clients, make_optimizer, parse_settings  # noqa: E402
from flowc.optimizers.progress import plain_progress  # noqa: E402
from flowc.optimizers.scoring import Metric, metric_by_name  # noqa: E402
from flowc.runtime.evaluate import MetricBinding  # noqa: E402
from flowc.runtime.metrics import get_metric  # noqa: E402

Rows = list[dict[str, Any]]


@dataclass
class Task:
    name: str
    compiled: CompiledPipeline
    metric: Metric  # what the optimizers maximize
    report: list[tuple[str, str]]  # (label, metric fn) reported on the test set; the first is primary
    train: Rows
    val: Rows
    test: Rows
    frozen: list[str] = field(default_factory=list)
    first_param: str | None = None  # the param farthest from the output (depth tasks)


# -- tasks ------------------------------------------------------------------------------------------


def _with_ids(rows: Rows, prefix: str) -> Rows:
    return [{**r, "id": str(r.get("id") or f"{prefix}{i}")} for i, r in enumerate(rows)]


def _object_counting(args: argparse.Namespace) -> tuple[Rows, Rows, Rows]:
    data = json.loads(shared_data("bbh", "object_counting.json").read_text(encoding="utf-8"))
    rows = _with_ids([{"question": e["input"], "answer": e["target"]} for e in data["examples"]], "oc")
    return rows[:50][: args.n_train], rows[50:150][: args.n_val], rows[150:][: args.n_test]


def _retarget(spec: Any, model: str, timeout: float, corpus: Path | None = None) -> CompiledPipeline:
    """The spec with every model set to `model` (with a timeout long enough for a loaded CPU: a
    timed-out call fails its run, which would score 0 and read as a quality figure) and, when given,
    every corpus set to `corpus`; compiled."""
    models = {k: m.model_copy(update={"id": model, "timeout": timeout}) for k, m in spec.models.items()}
    update: dict[str, Any] = {"models": models}
    if corpus is not None:
        update["corpora"] = {k: c.model_copy(update={"path": str(corpus)}) for k, c in spec.corpora.items()}
    return flowc.compile(spec.model_copy(update=update))


def _hotpotqa_corpus(out: Path) -> Path:
    """Every context paragraph of the dev and train samples, deduplicated by title (deterministic)."""
    path = out / "corpus.jsonl"
    if path.exists():
        return path
    seen: dict[str, str] = {}
    for name in ("dev.jsonl", "train.jsonl"):
        for line in shared_data("hotpotqa", name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                ctx = json.loads(line)["context"]
                for title, sentences in zip(ctx["title"], ctx["sentences"], strict=True):
                    seen.setdefault(title, "".join(sentences).strip())
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        "".join(json.dumps({"id": t, "title": t, "text": x}, ensure_ascii=False) + "\n" for t, x in seen.items()),
        encoding="utf-8",
    )
    os.replace(tmp, path)
    return path


def _qa_rows(name: str) -> Rows:
    lines = shared_data("hotpotqa", name).read_text(encoding="utf-8").splitlines()
    return [
        {"id": r["id"], "question": r["question"], "answer": r["answer"]}
        for r in (json.loads(x) for x in lines if x.strip())
    ]


def build_task(name: str, args: argparse.Namespace) -> Task:
    if name == "bbh" or name.startswith("depth"):
        train, val, test = _object_counting(args)
        metric = metric_by_name("last_integer", "answer")
        if name == "bbh":
            from bench_bbh import pipeline as bbh_pipeline

            compiled = _retarget(bbh_pipeline(args.task_lm, args.max_tokens).spec, args.task_lm, args.timeout)
            return Task(name, compiled, metric, [("acc", "last_integer")], train, val, test, frozen=["solve.prompt"])
        from flowc.testing.generators import deep_chain

        depth = int(name.removeprefix("depth"))
        compiled = _retarget(deep_chain(depth, model_id=args.task_lm), args.task_lm, args.timeout)
        return Task(name, compiled, metric, [("acc", "last_integer")], train, val, test, first_param="step1.prompt")
    if name == "hotpotqa":
        corpus = _hotpotqa_corpus(Path(args.results_dir) / "hotpotqa")
        compiled = _retarget(flowc.load_spec(args.hotpotqa_spec), args.task_lm, args.timeout, corpus)
        pool = _qa_rows("train.jsonl")
        train, val = pool[: args.n_train], pool[args.n_train : args.n_train + args.n_val]
        test = _qa_rows("dev.jsonl")[: args.n_test]
        return Task(
            name, compiled, metric_by_name("f1", "answer"), [("f1", "f1"), ("em", "exact_match")], train, val, test
        )
    if name == "pubmedqa":
        from bench_pubmedqa import load_splits
        from bench_pubmedqa import pipeline as pubmed_pipeline

        ns = argparse.Namespace(data="shared", seed=0, n_train=args.n_train, n_val=args.n_val, n_test=args.n_test)
        train, val, test = (_with_ids(x, "pm") for x in load_splits(ns))
        compiled = _retarget(pubmed_pipeline(args.task_lm).spec, args.task_lm, args.timeout)
        metric = metric_by_name("label_accuracy", "answer")
        return Task(name, compiled, metric, [("acc", "label_accuracy")], train, val, test)
    raise FlowcError("invalid-value", f"no task '{name}'", hint="tasks: bbh, hotpotqa, pubmedqa, depth<N>")


# -- evaluation -------------------------------------------------------------------------------------


def evaluate_test(task: Task, compiled: CompiledPipeline, folder: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The test set, one checkpointed line per finished example (a rerun continues)."""
    from flowc.runtime.evaluate import evaluate
    from flowc.runtime.executor import Executor

    bindings = [
        MetricBinding(label, get_metric(fn), task.metric.output, task.metric.target) for label, fn in task.report
    ]
    from flowc.runtime.session import default_client

    executor = Executor(compiled, lm=default_client(compiled))
    report = asyncio.run(evaluate(executor, task.test, bindings, folder, concurrency=args.concurrency, resume=True))
    rows = json.loads((folder / "report.json").read_text(encoding="utf-8"))["examples"]
    return {**report, "per_example": {r["id"]: r["scores"] for r in rows}}


def paired_bootstrap(before: Sequence[float], after: Sequence[float], n: int = 10_000, seed: int = 0) -> list[float]:
    """A 95 % percentile interval of mean(after - before), resampling examples in pairs."""
    diffs = [a - b for a, b in zip(after, before, strict=True)]
    if not diffs:
        return [0.0, 0.0]
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(diffs, k=len(diffs))) for _ in range(n))
    return [round(means[int(0.025 * n)], 4), round(means[int(0.975 * n) - 1], 4)]


def _journal_totals(path: Path) -> dict[str, int]:
    calls = tokens = 0
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)["response"]
            except (ValueError, KeyError):
                continue
            if not r.get("cached"):
                calls += 1
                tokens += int(r.get("prompt_tokens", 0)) + int(r.get("completion_tokens", 0))
    return {"calls": calls, "tokens": tokens}


# -- one unit ---------------------------------------------------------------------------------------


def run_unit(task: Task, name: str, seed: int, before: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(args.results_dir) / task.name / f"{name}-s{seed}"
    done = folder / "result.json"
    if done.exists():
        return dict(json.loads(done.read_text(encoding="utf-8")))
    folder.mkdir(parents=True, exist_ok=True)
    run_dir = folder / "run"
    clients = make_clients(task.compiled, args.critic_lm)
    # a task that freezes its prompt templates (BBH) is optimized through the system instruction
    frozen_prompts = any(p.endswith(".prompt") for p in task.frozen)
    settings = known_settings(
        name, {"max_tokens": args.optimizer_max_tokens, "components": ("system",) if frozen_prompts else None}
    )
    settings = {k: v for k, v in settings.items() if v is not None}
    settings.update(
        parse_settings(name, [s for s in args.set if s.split("=", 1)[0].replace("-", "_") in _fields(name)])
    )
    opt = make_optimizer(
        name,
        clients,
        steps=args.steps,
        batch_size=args.batch_size,
        frozen=task.frozen,
        resume=(run_dir / "job.json").exists(),
        settings=settings,
        progress=plain_progress(),
    )
    budget = Budget(calls=args.budget_calls, tokens=args.budget_tokens)
    patch = opt.optimize(
        task.compiled,
        trainset=task.train,
        valset=task.val,
        metric=task.metric,
        budget=budget,
        seed=seed,
        run_dir=run_dir,
    )
    patch.save(folder / "patch.json")
    patched = patch.apply(task.compiled)
    (folder / "prompts.json").write_text(
        json.dumps({k: patched.params[k].value for k in patch.params}, indent=2, ensure_ascii=False) + "\n"
    )
    try:
        from flowc.optimizers.writeback import optimized_source

        (folder / "optimized.flow").write_text(optimized_source(task.compiled, patched, patch), encoding="utf-8")
    except (FlowcError, OSError, KeyError) as e:  # a spec without source: prompts.json has the values
        print(f"  (no optimized source: {e})", file=sys.stderr)
    after = evaluate_test(task, patched, folder / "test_after", args) if patch.params else before
    primary = task.report[0][0]
    ids = [r["id"] for r in task.test]
    scores_before = [before["per_example"][i][primary] for i in ids]
    scores_after = [after["per_example"][i][primary] for i in ids]
    updates = float(patch.scores.get("updates", 0.0))
    result: dict[str, Any] = {
        "task": task.name,
        "optimizer": name,
        "seed": seed,
        "status": "ok",
        "val_before": patch.scores.get("val_before"),
        "val_after": patch.scores.get("val_after"),
        "test_before": before["metrics"],
        "test_after": after["metrics"],
        "test_gain": {k: round(after["metrics"][k] - before["metrics"][k], 4) for k in before["metrics"]},
        f"{primary}_gain_ci95": paired_bootstrap(scores_before, scores_after),
        "n_test": len(ids),
        "test_errors": {"before": before.get("errors", 0), "after": after.get("errors", 0)},
        "budget": {"calls": args.budget_calls, "tokens": args.budget_tokens},
        "spent": {
            **patch.budget_used,
            "pipeline": _journal_totals(run_dir / "journal-pipeline.jsonl"),
            "optimizer": _journal_totals(run_dir / "journal-optimizer.jsonl"),
        },
        "stopped_by": patch.stopped_by,
        "updates": updates,
        "effective_updates": patch.scores.get("effective_updates", 0.0),
        "effective_update_rate": round(float(patch.scores.get("effective_updates", 0.0)) / updates, 3)
        if updates
        else None,
        "optimize_seconds": patch.budget_used.get("seconds"),
        "test_eval_seconds": round(after.get("seconds_total", 0.0), 1) if patch.params else 0.0,
        "changed": sorted(patch.params),
        "files": {"patch": str(folder / "patch.json"), "prompts": str(folder / "prompts.json")},
    }
    if task.first_param:
        from bench_depth import feedback_per_step, tokenizer

        count = tokenizer(args.task_lm)
        per_step = [sum(count(t) for t in texts) for texts in feedback_per_step(run_dir, task.first_param)]
        result["first_node_feedback_tokens"] = {"max": max(per_step, default=0), "per_step": per_step}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, done)
    return result


def _fields(name: str) -> set[str]:
    from flowc.optimizers.registry import get_optimizer

    return set(getattr(get_optimizer(name), "__dataclass_fields__", {}))


# -- main -------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", default="bbh,hotpotqa", help="bbh, hotpotqa, pubmedqa, depth<N> (comma-separated)")
    ap.add_argument("--optimizers", default="all", help="'all' (every registered optimizer) or a comma-separated list")
    ap.add_argument("--seeds", default="0", help="comma-separated optimizer seeds (the splits do not depend on them)")
    ap.add_argument("--task-lm", default="local/qwen-coder-0.5b", help="the pipeline's model")
    ap.add_argument("--critic-lm", default="local/qwen-coder-1.5b", help="the optimizers' own model")
    ap.add_argument("--hotpotqa-spec", default=str(ROOT / "pipelines" / "agentic_rag.flow"))
    ap.add_argument("--n-train", type=int, default=20)
    ap.add_argument("--n-val", type=int, default=20)
    ap.add_argument("--n-test", type=int, default=100)
    ap.add_argument("--steps", type=int, help="each optimizer's steps (TEP: the cap per phase); default: its own")
    ap.add_argument("--batch-size", type=int, default=3)
    ap.add_argument("--budget-calls", type=int, default=600, help="LM calls per unit (pipeline + optimizer)")
    ap.add_argument("--budget-tokens", type=int, default=1_500_000, help="tokens per unit (pipeline + optimizer)")
    ap.add_argument("--max-tokens", type=int, default=256, help="the bbh pipeline's max_tokens")
    ap.add_argument("--optimizer-max-tokens", type=int, default=600)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="an optimizer setting")
    ap.add_argument("--concurrency", type=int, default=1, help="test examples run at once")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per LM call (task and critic models)")
    ap.add_argument("--results-dir", default=str(ROOT / "benchmarks" / "results" / "quality"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.json"))
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from flowc.optimizers.registry import available

    names = list(available()) if args.optimizers == "all" else [x for x in args.optimizers.split(",") if x]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    root = Path(args.results_dir)
    errors: list[dict[str, Any]] = []
    for task_name in [x for x in args.tasks.split(",") if x]:
        task = build_task(task_name, args)
        t0 = time.perf_counter()
        print(f"{task.name}: {len(task.train)} train / {len(task.val)} val / {len(task.test)} test", flush=True)
        before = evaluate_test(task, task.compiled, root / task.name / "test_before", args)
        info = {
            "sizes": {"train": len(task.train), "val": len(task.val), "test": len(task.test)},
            "test_before": before["metrics"],
            "test_before_seconds": round(before.get("seconds_total", time.perf_counter() - t0), 1),
            "settings": {k: v for k, v in vars(args).items() if k not in ("out", "tasks")} | {"optimizers": names},
        }
        (root / task.name / "task.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        for seed in seeds:
            for name in names:
                try:
                    unit = run_unit(task, name, seed, before, args)
                except FlowcError as e:  # this optimizer cannot run this task: report it, go on
                    unit = {"task": task.name, "optimizer": name, "seed": seed, "status": f"error: {e}"}
                    errors.append(unit)
                print(_line(unit), flush=True)
                write_summary(root, args.out, errors)
    write_summary(root, args.out, errors)
    return 0


def write_summary(root: Path, out: str, errors: list[dict[str, Any]]) -> None:
    """Every task and finished unit under the results folder (earlier invocations' too), and this
    invocation's errors."""
    tasks = {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(root.glob("*/task.json"))}
    units = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(root.glob("*/*/result.json"))]
    write_results(out, {"benchmark": "quality", "machine": machine(), "tasks": tasks, "units": units + errors})


def _line(u: dict[str, Any]) -> str:
    if u.get("status") != "ok":
        return f"{u['task']:9} {u['optimizer']:10} s{u['seed']}: {u['status'][:300]}"
    primary = next(iter(u["test_before"]))
    ci = u.get(f"{primary}_gain_ci95")
    return (
        f"{u['task']:9} {u['optimizer']:10} s{u['seed']}: test {primary} {u['test_before'][primary]:.3f} → "
        f"{u['test_after'][primary]:.3f} (gain 95% CI {ci}), val {u['val_before']} → {u['val_after']}, "
        f"{int(u['spent']['calls'])} calls, {int(u['spent']['tokens']):,} tokens, effective updates "
        f"{u['effective_update_rate']}, {u['optimize_seconds']}s"
        + (f", stopped by {u['stopped_by']}" if u["stopped_by"] else "")
    )


if __name__ == "__main__":
    raise SystemExit(main())
