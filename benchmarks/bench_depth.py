"""How an optimizer's feedback and cost grow with pipeline depth, on `deep_chain(depth)`.

    .venv/bin/python benchmarks/bench_depth.py [--optimizers textgrad] [--depths 2,4,8,16]
        [--lm fake|MODEL] [--optimizer-lm MODEL] [--steps 3] [--batch-size 2] [--share 1.0]
        [--max-feedback-chars 1500|none] [--limit-val 3]

Workload: `flowc.testing.generators.deep_chain(depth)` — a drafter and depth-1 refiners, every
node's prompt trainable; data: ten "What is the capital of X?" questions (exact match), the first
seven for training, the rest for validation.

Per optimizer and depth it reports:
- `first_node_feedback_tokens`: the feedback that reaches the first node's prompt per step (for
  TextGrad: the gradients on `step1.prompt` that go into its update, after dedup and caps), in
  tokens = characters / 4, mean and max over steps;
- `first_node_update_prompt_tokens`: the size of the update request for the first node (what Q6
  is about), tokens = characters / 4, max over steps;
- `tokens_per_step`: every token of the job (pipeline and optimizer calls, the one baseline
  validation included) divided by the steps run; `calls_per_step` likewise;
- `effective_update_rate`: the share of param updates (params × steps) that changed a prompt and
  passed the validation gate.

`--lm fake` (the default, seconds per run): the pipeline model is
`flowc.testing.optimizer_fakes.chain_pipeline_answer` (the drafter answers "I think it is <capital>."
— wrong under exact match — refiners pass the answer on; a node whose prompt holds the hint "Name the
capital city." answers with the bare capital), and the critic is `GrowingCritic(share)`: on a wrong
final answer it writes one fixed 20-word critique; upstream it writes its own critique followed by the
first `share` of the downstream feedback, verbatim (share=1.0: the feedback reaching node i holds one
critique per node below it, so it grows linearly with depth unless capped; "No change needed." when
nothing downstream was criticized); an update with a critique puts the hint in front of the prompt,
one without returns it unchanged. With the fake the figures measure flowc's propagation (what it
sends, caps and drops), not a model. Any litellm model id works as `--lm` (and `--optimizer-lm`).

Any registered optimizer runs with `--optimizers NAME` (built by `flowc.optimizers.factory`); its
feedback probe reads the `feedback_chars` ({param: chars}) of the rows in the optimizer's `stats`
list, or give a probe in PROBES. Each run is added to benchmarks/results/depth.json under a label
(`--label`, default from the settings); `--fresh` starts the file over.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import machine, write_results  # noqa: E402

import flowc  # noqa: E402
from flowc.optimizers.budget import Budget  # noqa: E402
from flowc.optimizers.factory import Clients, known_settings, make_clients, make_optimizer  # noqa: E402
from flowc.optimizers.scoring import metric_from_spec  # noqa: E402
from flowc.runtime.lm import LMClient, LMRequest, LMResponse  # noqa: E402
from flowc.testing.generators import deep_chain  # noqa: E402
from flowc.testing.optimizer_fakes import FunctionLM, GrowingCritic, capital_questions, chain_pipeline_answer  # noqa: E402


def build(name: str, clients: Clients, args: argparse.Namespace) -> Any:
    """Optimizer `name` with the benchmark's settings (those it has); `--steps` is TextGrad's
    steps and TEP's cap per phase (one round)."""
    settings = known_settings(
        name, {"max_feedback_chars": args.max_feedback_chars, "max_tokens": args.optimizer_max_tokens}
    )
    return make_optimizer(name, clients, steps=args.steps, batch_size=args.batch_size, settings=settings)


#: the optimizers compared (any registered one works with --optimizers)
OPTIMIZERS = ("textgrad", "tep")


def stats_probe(optimizer: Any, first_param: str) -> list[int]:
    """Chars of feedback on `first_param` per step, from rows of `optimizer.stats` with `feedback_chars`."""
    return [int(row.get("feedback_chars", {}).get(first_param, 0)) for row in getattr(optimizer, "stats", [])]


#: name → probe(optimizer, first_param) -> feedback chars per step; default `stats_probe`.
PROBES: dict[str, Callable[[Any, str], list[int]]] = {}


class CountingLM:
    """Counts calls and tokens; remembers the largest request per `node` tag."""

    def __init__(self, inner: LMClient) -> None:
        self.inner = inner
        self.calls = 0
        self.tokens = 0
        self.largest: dict[str, int] = {}

    async def complete(self, request: LMRequest) -> LMResponse:
        r = await self.inner.complete(request)
        self.calls += 1
        self.tokens += r.total_tokens
        tag = request.node or ""
        self.largest[tag] = max(self.largest.get(tag, 0), len(request.prompt_text))
        return r


def run_one(name: str, depth: int, args: argparse.Namespace) -> dict[str, Any]:
    fake = args.lm == "fake"
    spec = deep_chain(depth, model_id="fake/model" if fake else args.lm)
    compiled = flowc.compile(spec)
    metric = metric_from_spec(compiled, "em")
    rows = capital_questions()
    train, val = rows[:7], rows[7:][: args.limit_val]
    if fake:
        clients = make_clients(
            compiled,
            "fake/critic",
            pipeline_lm=FunctionLM(chain_pipeline_answer),
            optimizer_lm=FunctionLM(GrowingCritic(share=args.share)),
        )
    else:
        clients = make_clients(compiled, args.optimizer_lm or args.lm)
    p_count, o_count = CountingLM(clients.pipeline), CountingLM(clients.optimizer)
    opt = build(name, Clients(p_count, o_count, clients.optimizer_model), args)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flowc-depth-") as run_dir:
        patch = opt.optimize(
            compiled,
            trainset=train,
            valset=val,
            metric=metric,
            budget=Budget(calls=args.budget_calls),
            seed=args.seed,
            run_dir=Path(run_dir),
        )
    seconds = time.perf_counter() - t0
    per_step = PROBES.get(name, stats_probe)(opt, "step1.prompt")
    steps_run = max(1, len(per_step))
    fb_tokens = [c / 4 for c in per_step]
    updates = float(patch.scores.get("updates", 0.0))
    effective = float(patch.scores.get("effective_updates", 0.0))
    update_tag = next((t for t in o_count.largest if t.endswith("step1.prompt") and "update" in t), None)
    return {
        "depth": depth,
        "steps": len(per_step),
        "first_node_feedback_tokens": {
            "mean": round(statistics.fmean(fb_tokens), 1) if fb_tokens else 0.0,
            "max": max(fb_tokens, default=0.0),
            "per_step": fb_tokens,
        },
        "first_node_update_prompt_tokens": round(o_count.largest[update_tag] / 4, 1) if update_tag else None,
        "tokens_per_step": round((p_count.tokens + o_count.tokens) / steps_run, 1),
        "calls_per_step": round((p_count.calls + o_count.calls) / steps_run, 1),
        "tokens": {"pipeline": p_count.tokens, "optimizer": o_count.tokens},
        "calls": {"pipeline": p_count.calls, "optimizer": o_count.calls},
        "effective_update_rate": round(effective / updates, 3) if updates else None,
        "updates": updates,
        "effective_updates": effective,
        "val_before": patch.scores.get("val_before"),
        "val_after": patch.scores.get("val_after"),
        "stopped_by": patch.stopped_by,
        "seconds": round(seconds, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizers", default="textgrad", help=f"comma-separated: {', '.join(OPTIMIZERS)}")
    ap.add_argument("--depths", default="2,4,8,16")
    ap.add_argument("--lm", default="fake", help="'fake' or a litellm model id (e.g. local/smollm2)")
    ap.add_argument("--optimizer-lm", help="model for the optimizer (default: --lm)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--limit-val", type=int, default=3)
    ap.add_argument("--share", type=float, default=1.0, help="the fake critic's echoed share of downstream feedback")
    ap.add_argument("--max-feedback-chars", default="1500", help="TextGrad's cap per feedback piece, or 'none'")
    ap.add_argument("--optimizer-max-tokens", type=int, default=400)
    ap.add_argument("--budget-calls", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--label", help="the name of this run in the results file (default: from the settings)")
    ap.add_argument("--fresh", action="store_true", help="start the results file over instead of adding a run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "depth.json"))
    args = ap.parse_args(argv)
    args.max_feedback_chars = None if args.max_feedback_chars == "none" else int(args.max_feedback_chars)
    label = args.label or f"{args.lm}, share {args.share}, cap {args.max_feedback_chars}"
    out = Path(args.out)
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
    result.update(
        benchmark="depth",
        workload="flowc.testing.generators.deep_chain(depth); 7 train / 3 val capital questions; exact match",
        machine=machine(),
    )
    runs = result.setdefault("runs", {})
    runs[label] = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "fresh")}, "results": {}}
    for name in [x for x in args.optimizers.split(",") if x]:
        rows = []
        for depth in [int(d) for d in args.depths.split(",") if d]:
            row = run_one(name, depth, args)
            rows.append(row)
            fb = row["first_node_feedback_tokens"]
            print(
                f"{name} depth {depth:>3}: first-node feedback {fb['mean']:>7} tok/step (max {fb['max']}), "
                f"update prompt {row['first_node_update_prompt_tokens']} tok, "
                f"{row['tokens_per_step']:>9} tok/step, {row['calls_per_step']} calls/step, "
                f"effective updates {row['effective_update_rate']}",
                flush=True,
            )
            runs[label]["results"][name] = rows
            write_results(out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
