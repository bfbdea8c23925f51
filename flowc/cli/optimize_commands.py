"""`flowc optimize`: improve a pipeline's prompts/demos against data, and write it back as source."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import flowc
from flowc.cli import executors
from flowc.cli.common import add_model_flag, load, resume_command
from flowc.cli.progress import OptimizeProgress
from flowc.errors import FlowcError
from flowc.optimizers.budget import Budget
from flowc.optimizers.progress import ProgressHook
from flowc.optimizers.scoring import Metric, metric_by_name, metric_from_spec


def register(sub: Any) -> None:
    p = sub.add_parser("optimize", help="optimize a pipeline's prompts or demos against a dataset")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--optimizer", "-O", required=True, help="textgrad, bootstrap, tep, ...")
    p.add_argument("--data", required=True, metavar="FILE.jsonl", help="training examples")
    p.add_argument("--val", metavar="FILE.jsonl", help="validation examples (default: split off --data)")
    p.add_argument("--val-fraction", type=float, default=0.5, help="share of --data for validation without --val")
    p.add_argument("--limit", type=int, help="use only the first N examples of each file")
    p.add_argument("--metric", "-m", help="metric name (default: the spec's first metric)")
    p.add_argument("--output", help="the pipeline output the metric scores")
    p.add_argument("--target", help="the dataset field with the gold answer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--steps", type=int, help="optimization steps (for tep: the cap of each phase); optimizer default otherwise"
    )
    p.add_argument("--batch-size", type=int, help="examples per minibatch")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="any other setting of the optimizer, e.g. --set beta0=0.2 --set forward_signal=B (repeatable)",
    )
    p.add_argument("--only", help="comma-separated params or nodes to train (default: every trainable one)")
    p.add_argument("--freeze", default="", help="comma-separated params or nodes to keep fixed")
    p.add_argument(
        "--optimizer-model",
        help="litellm model for the optimizer/critic (default: the method's preferred installed one, "
        "else the spec's first)",
    )
    p.add_argument("--budget-calls", type=int)
    p.add_argument("--budget-tokens", type=int)
    p.add_argument("--budget-usd", type=float)
    p.add_argument("--budget-seconds", type=float)
    p.add_argument("--dry-run", action="store_true", help="print the projected calls, tokens and cost; spend nothing")
    p.add_argument("--run-dir", help="where candidates, logs and checkpoints go (default .flowc/optimize/<name>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted job in --run-dir")
    p.add_argument("--write", "-w", action="store_true", help="write the optimized spec over SPEC")
    p.add_argument("--out", "-o", help="write the optimized spec here (default: <spec>.optimized.<ext>)")
    add_model_flag(p)
    executors.add_executor_flags(p, what="minibatch and validation evaluations")
    p.set_defaults(func=cmd_optimize)


def _split(rows: list[dict[str, Any]], fraction: float, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    n_val = max(1, int(len(rows) * fraction)) if len(rows) > 1 else 0
    val = [rows[i] for i in sorted(order[:n_val])]
    train = [rows[i] for i in sorted(order[n_val:])]
    return train, val


def _metric(args: argparse.Namespace, compiled: flowc.CompiledPipeline) -> Metric:
    if args.metric:
        return metric_by_name(args.metric, args.output or next(iter(compiled.spec.outputs)), args.target)
    return metric_from_spec(compiled)


def build_optimizer(
    name: str, compiled: flowc.CompiledPipeline, args: argparse.Namespace, progress: ProgressHook | None = None
) -> Any:
    """The optimizer and the optimizer model the options ask for (`flowc.optimizers.factory`:
    the pipeline's and the optimizer's clients share one rate-limit registry). `progress` receives
    the job's events (default: one plain line per step on stderr)."""
    from flowc.optimizers.factory import (
        make_clients,
        make_optimizer,
        parse_settings,
        preferred_optimizer_model,
        spec_settings,
    )
    from flowc.optimizers.progress import plain_progress

    clients = make_clients(compiled, args.optimizer_model or preferred_optimizer_model(name))
    optimizer = make_optimizer(
        name,
        clients,
        steps=args.steps,
        batch_size=args.batch_size,
        only=[x for x in (args.only or "").split(",") if x] or None,
        frozen=[x for x in args.freeze.split(",") if x],
        resume=args.resume,
        # the spec's `optimize: {name: {...}}` first, then --set over it
        settings={**spec_settings(name, compiled), **parse_settings(name, getattr(args, "set", None) or [])},
        progress=progress or plain_progress(),
    )
    return optimizer, clients.optimizer_model


def cmd_optimize(args: argparse.Namespace) -> int:
    from flowc.optimizers.projection import project
    from flowc.optimizers.writeback import copy_adapters, optimized_source, unified_diff
    from flowc.runtime.evaluate import load_dataset
    from flowc.runtime.session import home

    compiled, _meta = load(args.spec, args.model)  # the spec with its --model overrides applied
    rows = load_dataset(args.data, args.limit)
    if args.val:
        train, val = rows, load_dataset(args.val, args.limit)
    else:
        train, val = _split(rows, args.val_fraction, args.seed)
    if not train:
        raise FlowcError("dataset-invalid", "no training examples left", hint="pass more data or --val")
    metric = _metric(args, compiled)
    budget = Budget(args.budget_calls, args.budget_tokens, args.budget_usd, args.budget_seconds)
    live = OptimizeProgress()  # a bar on a terminal, one line per step in a log
    optimizer, model = build_optimizer(args.optimizer, compiled, args, progress=live)
    preflight = getattr(optimizer, "preflight", None)
    if preflight is not None:  # refuse a pipeline or settings the job would refuse, --dry-run too
        preflight(compiled, metric)
    phases = optimizer.projected_calls(compiled, len(train), len(val))
    pipeline_model = next(iter(compiled.spec.models.values())).id if compiled.spec.models else model
    proj = project(
        compiled,
        pipeline_calls=(sum(b for b, _ in phases.values()), sum(w for _, w in phases.values())),
        optimizer_calls=0,
        examples=train,
        pipeline_model=pipeline_model,
        optimizer_model=model,
        breakdown={k: w for k, (_, w) in phases.items()},
    )
    print(
        f"{args.optimizer} on {compiled.name}: {len(train)} train / {len(val)} val examples, metric "
        f"{metric.name}({metric.output} vs {metric.target}), budget {budget.describe()}"
    )
    print(proj.render())
    if args.dry_run:
        return 0
    run_dir = Path(args.run_dir) if args.run_dir else home() / "optimize" / f"{compiled.name}-{args.optimizer}"
    try:
        with executors.optimize_runner(args, budget), live:
            patch = optimizer.optimize(
                compiled, trainset=train, valset=val, metric=metric, budget=budget, seed=args.seed, run_dir=run_dir
            )
    except KeyboardInterrupt:
        argv = getattr(args, "argv", None) or sys.argv[1:]
        print(
            f"\ninterrupted: every completed step is checkpointed in {run_dir}\n"
            f"resume with: {resume_command(argv, add={'--run-dir': str(run_dir), '--resume': None})}",
            file=sys.stderr,
        )
        return 130
    patch.save(run_dir / "patch.json")
    patched = patch.apply(compiled)
    art, _lock = patched.write(run_dir / "build")
    s = patch.scores
    print(
        f"\nvalidation {metric.name}: {s.get('val_before', 0):.3f} → {s.get('val_after', 0):.3f}; "
        f"used {patch.budget_used}" + (f"; stopped by {patch.stopped_by}" if patch.stopped_by else "")
    )
    if not patch.params:
        print("no change kept (nothing improved the validation score)")
        return 0
    source_path = Path(args.spec)
    old = source_path.read_text(encoding="utf-8")
    target = (
        source_path
        if args.write
        else Path(args.out)
        if args.out
        else source_path.with_name(source_path.stem + ".optimized" + source_path.suffix)
    )
    # Trained adapters go beside the written spec (adapters/<model>-<sha12>.*), which names them there.
    new = optimized_source(compiled, patched, copy_adapters(patch, compiled, target.parent))
    target.write_text(new, encoding="utf-8")
    sys.stdout.write(unified_diff(old, new, str(source_path)))
    print(
        f"\nwrote {target}\npatch {run_dir / 'patch.json'}, artifact {art}, candidates {run_dir / 'candidates.jsonl'}"
    )
    return 0
