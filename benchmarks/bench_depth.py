"""How an optimizer's feedback and cost grow with pipeline depth, on `deep_chain(depth)`.

    .venv/bin/python benchmarks/bench_depth.py [--optimizers textgrad,tep] [--depths 2,4,8,16]
        [--lm fake|MODEL] [--optimizer-lm MODEL] [--steps 3] [--batch-size 2] [--share 1.0]
        [--max-feedback-chars 1500|none] [--limit-val 3] [--tokenizer local/qwen-coder-0.5b]
        [--set NAME=VALUE] [--run-dir DIR]

Workload: `flowc.testing.generators.deep_chain(depth)` — a drafter and depth-1 refiners, every
node's prompt trainable; data: ten "What is the capital of X?" questions (exact match), the first
seven for training, the rest for validation.

Every figure is in tokens of one tokenizer (`--tokenizer`, default the task model of the quality
protocol, `local/qwen-coder-0.5b`: its GGUF vocabulary, as llama.cpp tokenizes; message contents
only, without the chat template), for both optimizers and for the fakes alike. Per optimizer and
depth:
- `first_node_feedback_tokens`: per step, the feedback that the first node's prompt update
  *receives* — TextGrad: the gradients on `step1.prompt` that go into its update (after dedup and
  caps); TEP: the suggestions its update is given (the nudged phase's task message goes to the
  critic, not to the update, so it is not counted); 0 in a step with no update — mean and max;
- `first_node_update_prompt_tokens`: the largest update request for the first node (what Q6 is about);
- `tokens_per_step`, `calls_per_step`: every call of the job (pipeline and optimizer, the baseline
  validation included; prompt messages and replies) divided by the steps run;
- `effective_update_rate`: effective updates over updates (params × steps), as the patch counts them.

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

Any registered optimizer runs with `--optimizers NAME` (built by `flowc.optimizers.factory`); the
feedback probe reads the `feedback` of the rows of the job's log.jsonl (`feedback_per_step`).
Each run is added to benchmarks/results/depth.json under a label (`--label`, default from the
settings); `--fresh` starts the file over.
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
from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from _common import machine, write_results  # noqa: E402

import flowc  # noqa: E402
from flowc.optimizers.budget import Budget  # noqa: E402
from flowc.optimizers.factory import Clients, known_settings, make_clients, make_optimizer, parse_settings  # noqa: E402
from flowc.optimizers.scoring import metric_from_spec  # noqa: E402
from flowc.runtime.lm import LMClient, LMRequest, LMResponse  # noqa: E402
from flowc.testing.generators import deep_chain  # noqa: E402
from flowc.testing.optimizer_fakes import FunctionLM, GrowingCritic, capital_questions, chain_pipeline_answer  # noqa: E402

Count = Callable[[str], int]


def tokenizer(model: str) -> Count:
    """Token counts of `model`'s tokenizer (its GGUF vocabulary, as llama.cpp splits text)."""
    from flowc.backbone.gguf_io import GGUFModelFile
    from flowc.backbone.tokenizer import Tokenizer
    from flowc.runtime.local_provider import resolve_model_path

    tok = Tokenizer.from_metadata(GGUFModelFile(resolve_model_path(model)).metadata)

    @lru_cache(maxsize=65536)
    def count(text: str) -> int:
        return len(tok.encode(text, parse_special=False)) if text else 0

    return count


def build(name: str, clients: Clients, args: argparse.Namespace) -> Any:
    """Optimizer `name` with the benchmark's settings (those it has); `--steps` is TextGrad's
    steps and TEP's cap per phase."""
    settings = known_settings(
        name, {"max_feedback_chars": args.max_feedback_chars, "max_tokens": args.optimizer_max_tokens}
    )
    settings.update(parse_settings(name, [s for s in args.set if s.split("=", 1)[0] in _fields(name)]))
    return make_optimizer(name, clients, steps=args.steps, batch_size=args.batch_size, settings=settings)


def _fields(name: str) -> set[str]:
    from flowc.optimizers.registry import get_optimizer

    return set(getattr(get_optimizer(name), "__dataclass_fields__", {}))


def feedback_per_step(run_dir: Path, param: str) -> list[list[str]]:
    """The feedback texts the update of `param` received, per step, from the job's log.jsonl (it
    survives a resume): a row's `feedback` is {param: [texts]} (TextGrad's step rows) or, on a row
    about `param`, [texts] (TEP's node rows)."""
    path = run_dir / "log.jsonl"
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()] if path.exists() else []
    steps = max((int(r.get("step", 0)) for r in rows), default=0)
    per: list[list[str]] = [[] for _ in range(steps)]
    for r in rows:
        fb = r.get("feedback")
        texts = fb.get(param, []) if isinstance(fb, dict) else fb if r.get("param") == param else None
        if texts and int(r.get("step", 0)) >= 1:
            per[int(r["step"]) - 1].extend(str(t) for t in texts)
    return per


class CountingLM:
    """Counts calls and tokens (of one tokenizer); remembers the largest request per `node` tag."""

    def __init__(self, inner: LMClient, count: Count) -> None:
        self.inner = inner
        self.count = count
        self.calls = 0
        self.tokens = 0
        self.largest: dict[str, int] = {}

    async def complete(self, request: LMRequest) -> LMResponse:
        r = await self.inner.complete(request)
        prompt = sum(self.count(m.content) for m in request.messages)
        self.calls += 1
        self.tokens += prompt + self.count(r.text)
        tag = request.node or ""
        self.largest[tag] = max(self.largest.get(tag, 0), prompt)
        return r


def run_one(
    name: str, depth: int, args: argparse.Namespace, count: Count, run_dir: Path | None = None
) -> dict[str, Any]:
    """One optimizer on `deep_chain(depth)`; `run_dir` keeps the job (and resumes it when it holds one)."""
    fake = args.lm == "fake"
    compiled = flowc.compile(deep_chain(depth, model_id="fake/model" if fake else args.lm))
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
    p_count, o_count = CountingLM(clients.pipeline, count), CountingLM(clients.optimizer, count)
    opt = build(name, Clients(p_count, o_count, clients.optimizer_model), args)
    resume = run_dir is not None and (run_dir / "job.json").exists()
    opt.resume = resume
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="flowc-depth-") as tmp:
        job_dir = run_dir or Path(tmp)
        patch = opt.optimize(
            compiled,
            trainset=train,
            valset=val,
            metric=metric,
            budget=Budget(calls=args.budget_calls),
            seed=args.seed,
            run_dir=job_dir,
        )
        received = feedback_per_step(job_dir, "step1.prompt")
    seconds = time.perf_counter() - t0
    steps_run = max(1, len(received))
    fb_tokens = [sum(count(t) for t in texts) for texts in received]
    updates = float(patch.scores.get("updates", 0.0))
    effective = float(patch.scores.get("effective_updates", 0.0))
    update_tag = next((t for t in o_count.largest if t.endswith("step1.prompt") and "update" in t), None)
    return {
        "depth": depth,
        "steps": len(received),
        "resumed": resume,
        "first_node_feedback_tokens": {
            "mean": round(statistics.fmean(fb_tokens), 1) if fb_tokens else 0.0,
            "max": max(fb_tokens, default=0),
            "per_step": fb_tokens,
        },
        "first_node_update_prompt_tokens": o_count.largest[update_tag] if update_tag else None,
        "tokens_per_step": round((p_count.tokens + o_count.tokens) / steps_run, 1),
        "calls_per_step": round((p_count.calls + o_count.calls) / steps_run, 1),
        "tokens": {"pipeline": p_count.tokens, "optimizer": o_count.tokens},
        "calls": {"pipeline": p_count.calls, "optimizer": o_count.calls},
        "effective_update_rate": round(effective / updates, 3) if updates else None,
        "updates": updates,
        "effective_updates": effective,
        "val_before": patch.scores.get("val_before"),
        "val_after": patch.scores.get("val_after"),
        "changed": sorted(patch.params),
        "stopped_by": patch.stopped_by,
        "seconds": round(seconds, 2),
    }


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--optimizers", default="textgrad,tep", help="comma-separated registered optimizers")
    ap.add_argument("--depths", default="2,4,8,16")
    ap.add_argument("--lm", default="fake", help="'fake' or a litellm model id (e.g. local/qwen-coder-0.5b)")
    ap.add_argument("--optimizer-lm", help="model for the optimizer (default: --lm)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--limit-val", type=int, default=3)
    ap.add_argument("--share", type=float, default=1.0, help="the fake critic's echoed share of downstream feedback")
    ap.add_argument("--max-feedback-chars", default="1500", help="TextGrad's cap per feedback piece, or 'none'")
    ap.add_argument("--optimizer-max-tokens", type=int, default=400)
    ap.add_argument("--tokenizer", default="local/qwen-coder-0.5b", help="the model whose tokenizer counts tokens")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="an optimizer setting")
    ap.add_argument("--budget-calls", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run-dir", help="keep each job under DIR/<optimizer>-d<depth> (a rerun resumes it)")
    ap.add_argument("--label", help="the name of this run in the results file (default: from the settings)")
    ap.add_argument("--fresh", action="store_true", help="start the results file over instead of adding a run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "depth.json"))
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.max_feedback_chars = None if args.max_feedback_chars == "none" else int(args.max_feedback_chars)
    label = args.label or f"{args.lm}, share {args.share}, cap {args.max_feedback_chars}"
    out = Path(args.out)
    result: dict[str, Any] = json.loads(out.read_text()) if out.exists() and not args.fresh else {}
    result.update(
        benchmark="depth",
        workload="flowc.testing.generators.deep_chain(depth); 7 train / 3 val capital questions; exact match",
        units=f"tokens of {args.tokenizer}'s tokenizer (message contents and replies, no chat template)",
        machine=machine(),
    )
    count = tokenizer(args.tokenizer)
    runs = result.setdefault("runs", {})
    runs[label] = {"settings": {k: v for k, v in vars(args).items() if k not in ("out", "fresh")}, "results": {}}
    for name in [x for x in args.optimizers.split(",") if x]:
        rows = []
        for depth in [int(d) for d in args.depths.split(",") if d]:
            run_dir = Path(args.run_dir) / f"{name}-d{depth}" if args.run_dir else None
            row = run_one(name, depth, args, count, run_dir)
            rows.append(row)
            fb = row["first_node_feedback_tokens"]
            print(
                f"{name} depth {depth:>3}: first-node feedback {fb['mean']:>7} tok/step (max {fb['max']}), "
                f"update prompt {row['first_node_update_prompt_tokens']} tok, "
                f"{row['tokens_per_step']:>9} tok/step, {row['calls_per_step']} calls/step, "
                f"effective updates {row['effective_update_rate']}, val {row['val_before']} → {row['val_after']}",
                flush=True,
            )
            runs[label]["results"][name] = rows
            write_results(out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
