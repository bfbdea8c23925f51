"""PubMedQA on the 3-component system of OPTIMAS / TEP (pipelines/pubmedqa.flow), for TEP, TextGrad
and few-shot bootstrap at an equal call budget.

    .venv/bin/python benchmarks/bench_pubmedqa.py [--lm local/smollm2] [--optimizer-lm MODEL|fake]
        [--optimizers tep,textgrad,bootstrap] [--n-train 6] [--n-val 6] [--n-test 10]
        [--budget-calls 60] [--steps 2] [--batch-size 2] [--data shared|tiny] [--seed 0]

Data: ../shared/data/pubmedqa/ (see its SOURCE.md: PQA-L, 500 train + 500 test, labels
yes/no/maybe). Train and validation examples are drawn (seeded shuffle) from the train file, test
examples from the test file; the abstract's sections are joined with newlines into `context`, the
label is `answer`. `--data tiny` uses the shipped fixture pipelines/data/tiny_pubmedqa.jsonl (10
examples) for a seconds-long smoke run. The pipeline's models are replaced by `--lm`; metric
`label_accuracy` on `answer` (the spec's `accuracy`).

Every optimizer gets the same `--budget-calls` (pipeline and optimizer calls together, the
validation baseline included) and the same optimizer model (`--optimizer-lm`, default `--lm`).
`--steps` is TextGrad's number of steps and TEP's cap per phase (T_free = T_nudge = steps, one
round); both use `--batch-size`; bootstrap uses `--max-demos` and `--num-candidates`.
`--optimizer-lm fake` is `flowc.testing.optimizer_fakes.GrowingCritic` with a fixed answer-format
hint: it checks the mechanics with a real forward model, not what a critic contributes.

Reported per optimizer: test accuracy before and after, validation before/after, the prompts it
changed, calls and tokens of the optimization and of the test evaluation, wall time, what stopped
it. Writes benchmarks/results/pubmedqa.json (after each optimizer, so a long run can be watched).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import machine, shared_data, write_results  # noqa: E402

import flowc  # noqa: E402
from flowc.compile import CompiledPipeline  # noqa: E402
from flowc.optimizers.budget import Budget  # noqa: E402
from flowc.optimizers.factory import Clients, known_settings, make_clients, make_optimizer  # noqa: E402
from flowc.optimizers.scoring import Metric, Scorer, metric_from_spec  # noqa: E402
from flowc.runtime.lm import LMClient, LMRequest, LMResponse  # noqa: E402

SPEC = ROOT / "pipelines" / "pubmedqa.flow"
DATA = shared_data("pubmedqa")
TINY = ROOT / "pipelines" / "data" / "tiny_pubmedqa.jsonl"
FAKE_HINT = "Answer with exactly one word: yes, no or maybe."

Rows = list[dict[str, Any]]


class CountingLM:
    """Counts the calls and tokens that pass through it."""

    def __init__(self, inner: LMClient) -> None:
        self.inner = inner
        self.calls = 0
        self.tokens = 0

    async def complete(self, request: LMRequest) -> LMResponse:
        r = await self.inner.complete(request)
        self.calls += 1
        self.tokens += r.total_tokens
        return r


def pipeline(lm: str, max_tokens: int | None = None) -> CompiledPipeline:
    """pipelines/pubmedqa.flow with every model pointed at `lm` (and `max_tokens`, when given)."""
    spec = flowc.load_spec(str(SPEC))
    update: dict[str, Any] = {"id": lm} | ({"max_tokens": max_tokens} if max_tokens else {})
    models = {k: m.model_copy(update=update) for k, m in spec.models.items()}
    return flowc.compile(spec.model_copy(update={"models": models}))


def _row(e: Mapping[str, Any]) -> dict[str, Any]:
    ctx = e["context"]
    return {
        "id": e.get("index") or e.get("id"),
        "question": e["question"],
        "context": "\n".join(ctx) if isinstance(ctx, list) else str(ctx),
        "answer": e.get("groundtruth") or e.get("answer"),
    }


def load_splits(args: argparse.Namespace) -> tuple[Rows, Rows, Rows]:
    def read(path: Path) -> Rows:
        return [_row(json.loads(x)) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]

    if args.data == "tiny":
        rows = read(TINY)
        random.Random(args.seed).shuffle(rows)
        n_tr = min(args.n_train, max(1, len(rows) // 3))
        n_va = min(args.n_val, max(1, len(rows) // 3))
        return rows[:n_tr], rows[n_tr : n_tr + n_va], rows[n_tr + n_va :][: args.n_test]
    train_pool, test_pool = read(DATA / "combined_PubMedQA_train.jsonl"), read(DATA / "combined_PubMedQA_test.jsonl")
    random.Random(args.seed).shuffle(train_pool)
    random.Random(args.seed + 1).shuffle(test_pool)
    return (
        train_pool[: args.n_train],
        train_pool[args.n_train : args.n_train + args.n_val],
        test_pool[: args.n_test],
    )


def clients_for(args: argparse.Namespace, compiled: CompiledPipeline) -> Clients:
    """The pipeline's and the optimizer's clients (one rate-limit registry: `make_clients`)."""
    if args.optimizer_lm == "fake":
        from flowc.testing.optimizer_fakes import FunctionLM, GrowingCritic

        return make_clients(compiled, "fake", optimizer_lm=FunctionLM(GrowingCritic(share=0.5, hint=FAKE_HINT)))
    return make_clients(compiled, args.optimizer_lm)


def build(name: str, clients: Clients, args: argparse.Namespace) -> Any:
    """Optimizer `name` with this benchmark's settings (those it has); `--steps` is TextGrad's
    steps and TEP's cap per phase."""
    settings = known_settings(
        name,
        {
            "max_tokens": args.optimizer_max_tokens,
            "max_demos": args.max_demos,
            "max_bootstrapped": args.max_demos * 2,
            "num_candidates": args.num_candidates,
        },
    )
    return make_optimizer(name, clients, steps=args.steps, batch_size=args.batch_size, settings=settings)


async def evaluate(lm: LMClient, compiled: CompiledPipeline, rows: Sequence[Mapping[str, Any]], metric: Metric) -> Any:
    counting = CountingLM(lm)
    t0 = time.perf_counter()
    ev = await Scorer(counting).evaluate(compiled, rows, metric)
    answers = [it.run.outputs.get("answer") for it in ev.items]
    return {
        "acc": round(ev.mean, 4),
        "n": len(rows),
        "answers": {str(a): answers.count(a) for a in sorted(set(answers), key=str)},
        "calls": counting.calls,
        "tokens": counting.tokens,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lm", default="local/smollm2")
    ap.add_argument("--optimizer-lm", help="model for critics, feedback and updates (default: --lm), or 'fake'")
    ap.add_argument("--optimizers", default="tep,textgrad,bootstrap")
    ap.add_argument("--data", choices=("shared", "tiny"), default="shared")
    ap.add_argument("--n-train", type=int, default=6)
    ap.add_argument("--n-val", type=int, default=6)
    ap.add_argument("--n-test", type=int, default=10)
    ap.add_argument("--steps", type=int, default=2, help="TextGrad steps; TEP's T_free = T_nudge")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, help="the pipeline models' max_tokens (default: the spec's 64/128)")
    ap.add_argument("--optimizer-max-tokens", type=int, default=400)
    ap.add_argument("--max-demos", type=int, default=2)
    ap.add_argument("--num-candidates", type=int, default=2)
    ap.add_argument("--budget-calls", type=int, default=60, help="per optimizer (0 or less: unlimited)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", help="keep each optimizer's run directory (candidates, journals) under here")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "pubmedqa.json"))
    args = ap.parse_args(argv)
    args.optimizer_lm = args.optimizer_lm or args.lm

    compiled = pipeline(args.lm, args.max_tokens)
    metric = metric_from_spec(compiled)
    train, val, test = load_splits(args)
    clients = clients_for(args, compiled)
    pipeline_lm = clients.pipeline
    budget_calls = args.budget_calls if args.budget_calls and args.budget_calls > 0 else None
    result: dict[str, Any] = {
        "benchmark": "pubmedqa",
        "pipeline": "pipelines/pubmedqa.flow (select → analyze → solve_small | solve_large), models → --lm",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "run_dir")},
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "test_labels": {lab: sum(r["answer"] == lab for r in test) for lab in ("yes", "no", "maybe")},
        "machine": machine(),
        "metric": f"{metric.name} ({metric.output} vs {metric.target})",
        "optimizers": {},
    }

    def save() -> None:
        write_results(args.out, result)

    print(f"test before ({len(test)} examples)...", flush=True)
    result["test_before"] = asyncio.run(evaluate(pipeline_lm, compiled, test, metric))
    print(result["test_before"], flush=True)
    save()
    for name in [x for x in args.optimizers.split(",") if x]:
        p_count, o_count = CountingLM(clients.pipeline), CountingLM(clients.optimizer)
        opt = build(name, Clients(p_count, o_count, clients.optimizer_model), args)
        t0 = time.perf_counter()
        run_dir = Path(args.run_dir) / name if args.run_dir else None  # None: a fresh temporary directory
        patch = opt.optimize(
            compiled,
            trainset=train,
            valset=val,
            metric=metric,
            budget=Budget(calls=budget_calls),
            seed=args.seed,
            run_dir=run_dir,
        )
        seconds = time.perf_counter() - t0
        patched = patch.apply(compiled)
        after = asyncio.run(evaluate(pipeline_lm, patched, test, metric)) if patch.params else result["test_before"]
        result["optimizers"][name] = {
            "val_before": patch.scores.get("val_before"),
            "val_after": patch.scores.get("val_after"),
            "test_before": result["test_before"]["acc"],
            "test_after": after["acc"],
            "changed": sorted(patch.params),
            "new_values": {k: str(v) for k, v in patch.params.items()},
            "optimize_calls": {"pipeline": p_count.calls, "optimizer": o_count.calls},
            "optimize_tokens": {"pipeline": p_count.tokens, "optimizer": o_count.tokens},
            "budget_used": patch.budget_used,
            "stopped_by": patch.stopped_by,
            "scores": patch.scores,
            "optimize_seconds": round(seconds, 1),
            "test_eval": after,
        }
        print(name, json.dumps(result["optimizers"][name], ensure_ascii=False)[:1500], flush=True)
        save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
