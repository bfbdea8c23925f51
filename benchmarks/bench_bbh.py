"""BBH object counting with TextGrad's prompt-optimization protocol (ALGORITHMS.md §1.6), for
TextGrad and for few-shot bootstrap.

    .venv/bin/python benchmarks/bench_bbh.py [--lm local/smollm2] [--optimizer-lm MODEL|fake]
        [--optimizers textgrad,bootstrap] [--steps 12] [--batch-size 3]
        [--limit-train N] [--limit-val N] [--limit-test N] [--max-tokens 256] [--budget-calls N]

Protocol: ../shared/data/bbh/object_counting.json (see its SOURCE.md), examples[:50] train,
[50:150] val, [150:] test (100); one `llm` node whose system prompt is TextGrad's zero-shot
chain-of-thought instruction and whose user prompt is the question; metric `last_integer` (the
last number in the answer equals the gold number). TextGrad trains the system prompt only (batch 3,
12 iterations, validation-gated); bootstrap harvests demos from successful training runs and keeps
the best demo set that does not lower the validation score. Both models run at temperature 0.

Reported per optimizer: test accuracy before and after, validation before/after, the LM calls and
tokens of the optimization (pipeline and optimizer calls together) and of the test evaluations,
wall time. `--optimizer-lm fake` uses `flowc.testing.optimizer_fakes.GrowingCritic` (a fixed
critique sentence; updates prepend a fixed counting instruction): it checks the mechanics with a
real forward model, not what a critic model contributes. Writes benchmarks/results/bbh.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
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
from flowc.optimizers.scoring import Metric, Scorer, metric_by_name  # noqa: E402
from flowc.runtime.lm import LMClient, LMRequest, LMResponse  # noqa: E402
from flowc.spec.models import InputDecl, LLMNode, MetricDecl, ModelDecl, OutputDecl, Pipeline  # noqa: E402

DATA = shared_data("bbh", "object_counting.json")
#: TextGrad's starting instruction for BBH/GSM8K (zero-shot chain of thought, numeric answer line).
ZERO_SHOT_COT = (
    "You will answer a reasoning question. Think step by step. The last line of your response should "
    "be of the following format: 'Answer: $VALUE' where VALUE is a numerical value."
)
FAKE_HINT = "Count the items of the asked kind one by one, then give the total."


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


def pipeline(lm: str, max_tokens: int) -> CompiledPipeline:
    spec = Pipeline(
        pipeline="object_counting",
        description="BBH object counting: answer a counting question, last line 'Answer: N'",
        inputs={"question": InputDecl(type="str")},
        outputs={"answer": OutputDecl(source="solve.answer", type="str")},
        models={"lm": ModelDecl(id=lm, max_tokens=max_tokens, timeout=600)},
        nodes={
            "solve": LLMNode(
                role="solver",
                system=ZERO_SHOT_COT,
                prompt="{{question}}",
                inputs={"question": "question"},
                outputs={"answer": "str"},
                format="text",
            )
        },
        metrics={"acc": MetricDecl(fn="last_integer", output="answer", target="answer")},
    )
    return flowc.compile(spec)


def load_splits() -> tuple[list[dict[str, str]], list[dict[str, str]], list[dict[str, str]]]:
    rows = [{"question": e["input"], "answer": e["target"]} for e in json.loads(DATA.read_text())["examples"]]
    return rows[:50], rows[50:150], rows[150:]


def clients_for(args: argparse.Namespace, compiled: CompiledPipeline) -> Clients:
    """The pipeline's and the optimizer's clients (one rate-limit registry: `make_clients`)."""
    if args.optimizer_lm == "fake":
        from flowc.testing.optimizer_fakes import FunctionLM, GrowingCritic

        return make_clients(compiled, "fake", optimizer_lm=FunctionLM(GrowingCritic(share=0.5, hint=FAKE_HINT)))
    return make_clients(compiled, args.optimizer_lm)


def build(name: str, clients: Clients, args: argparse.Namespace) -> Any:
    """Optimizer `name` with this benchmark's settings (those it has)."""
    settings = known_settings(
        name,
        {
            "max_tokens": args.optimizer_max_tokens,
            "max_demos": args.max_demos,
            "max_bootstrapped": args.max_demos * 2,
            "num_candidates": args.num_candidates,
        },
    )
    only = ["solve.system"] if name != "bootstrap" else None  # TextGrad's protocol trains the system prompt
    return make_optimizer(name, clients, steps=args.steps, batch_size=args.batch_size, only=only, settings=settings)


async def evaluate(
    lm: LMClient, compiled: CompiledPipeline, rows: Sequence[Mapping[str, Any]], metric: Metric
) -> dict[str, Any]:
    counting = CountingLM(lm)
    t0 = time.perf_counter()
    ev = await Scorer(counting).evaluate(compiled, rows, metric)
    return {
        "acc": round(ev.mean, 4),
        "n": len(rows),
        "calls": counting.calls,
        "tokens": counting.tokens,
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lm", default="local/smollm2")
    ap.add_argument("--optimizer-lm", help="model for feedback and updates (default: --lm), or 'fake'")
    ap.add_argument("--optimizers", default="textgrad,bootstrap")
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=3)
    ap.add_argument("--limit-train", type=int)
    ap.add_argument("--limit-val", type=int)
    ap.add_argument("--limit-test", type=int)
    ap.add_argument("--max-tokens", type=int, default=256, help="the pipeline model's max_tokens")
    ap.add_argument("--optimizer-max-tokens", type=int, default=400)
    ap.add_argument("--max-demos", type=int, default=4)
    ap.add_argument("--num-candidates", type=int, default=4)
    ap.add_argument("--budget-calls", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", help="keep each optimizer's run directory (candidates, journals) under here")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bbh.json"))
    args = ap.parse_args(argv)
    args.optimizer_lm = args.optimizer_lm or args.lm

    compiled = pipeline(args.lm, args.max_tokens)
    metric = metric_by_name("last_integer", "answer")
    train, val, test = load_splits()
    train, val, test = train[: args.limit_train], val[: args.limit_val], test[: args.limit_test]
    clients = clients_for(args, compiled)
    pipeline_lm = clients.pipeline
    result: dict[str, Any] = {
        "benchmark": "bbh/object_counting",
        "protocol": "TextGrad §1.6: train [:50], val [50:150], test [150:]; batch 3, 12 iterations, validation-gated",
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "run_dir")},
        "sizes": {"train": len(train), "val": len(val), "test": len(test)},
        "machine": machine(),
        "metric": "last_integer",
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
            budget=Budget(calls=args.budget_calls),
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
            "new_values": dict(patch.params),
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
