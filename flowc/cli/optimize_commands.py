"""`flowc optimize`: improve a pipeline's prompts/demos against data, and write it back as source."""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path
from typing import Any

import flowc
from flowc.cli.common import add_model_flag, load, resume_command
from flowc.errors import FlowcError
from flowc.optimizers.budget import Budget
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
    p.add_argument("--optimizer-model", help="litellm model for the optimizer/critic (default: the spec's first)")
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


def build_optimizer(name: str, compiled: flowc.CompiledPipeline, args: argparse.Namespace) -> Any:
    from flowc.optimizers.registry import get_optimizer
    from flowc.runtime.litellm_client import LiteLLMClient
    from flowc.runtime.ratelimit import RateLimiters
    from flowc.runtime.session import default_client, policies

    cls = get_optimizer(name)
    # One limiter registry: a model's RPM/TPM hold across the pipeline's and the optimizer's calls
    # (the optimizer model is often one the spec declares, with the spec's policy).
    limiters = RateLimiters()
    pipeline_lm = default_client(compiled, limiters=limiters)
    model = args.optimizer_model or next(iter(compiled.spec.models.values())).id
    optimizer_lm = LiteLLMClient(policies(compiled), limiters=limiters)
    only = [x for x in (args.only or "").split(",") if x] or None
    frozen = [x for x in args.freeze.split(",") if x]
    kwargs: dict[str, Any] = {"pipeline_lm": pipeline_lm, "only": only, "frozen": frozen, "resume": args.resume}
    fields = getattr(cls, "__dataclass_fields__", {})
    if "optimizer_lm" in fields:
        kwargs.update(optimizer_lm=optimizer_lm, optimizer_model=model)
    if args.steps is not None:
        for f in ("steps",) if "steps" in fields else getattr(cls, "step_fields", ()):
            kwargs[f] = args.steps
    if args.batch_size is not None and "batch_size" in fields:
        kwargs["batch_size"] = args.batch_size
    kwargs.update(_settings(name, fields, getattr(args, "set", None) or []))
    return cls(**kwargs), model


#: fields `--set` does not reach (the clients and what other options set)
_NOT_SETTABLE = {"pipeline_lm", "optimizer_lm", "optimizer_model", "only", "frozen", "resume", "stats"}


def _settings(name: str, fields: dict[str, Any], pairs: list[str]) -> dict[str, Any]:
    """`--set NAME=VALUE` pairs, converted to the type of the field's default."""
    import dataclasses

    settable = sorted(f for f in fields if f not in _NOT_SETTABLE)
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in settable:
            raise FlowcError(
                "invalid-value",
                f"'--set {pair}': optimizer '{name}' has no setting '{key}'"
                if sep
                else f"'--set {pair}' is not NAME=VALUE",
                hint=f"settings of {name}: {', '.join(settable)}",
            )
        default = fields[key].default
        if default is dataclasses.MISSING and fields[key].default_factory is not dataclasses.MISSING:
            default = fields[key].default_factory()
        try:
            out[key] = _convert(raw.strip(), default)
        except ValueError:
            raise FlowcError(
                "invalid-value",
                f"'--set {pair}': '{raw}' is not a valid {type(default).__name__} for '{key}'",
                hint=f"the default is {default!r}",
            ) from None
    return out


def _convert(raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    if isinstance(default, tuple | list):
        items = [x.strip() for x in raw.split(",") if x.strip()]
        if default and all(isinstance(x, int | float) and not isinstance(x, bool) for x in default):
            return tuple(float(x) for x in items)
        return tuple(items)
    if default is None and raw.lower() in ("none", "null", ""):
        return None
    if default is None:
        try:
            return int(raw)
        except ValueError:
            return raw
    return raw


def cmd_optimize(args: argparse.Namespace) -> int:
    from flowc.optimizers.projection import project
    from flowc.optimizers.writeback import optimized_source, unified_diff
    from flowc.runtime.evaluate import load_dataset
    from flowc.runtime.session import home

    compiled, _meta = load(args.spec, args.model)  # --model overrides change the artifact, so the job
    rows = load_dataset(args.data, args.limit)
    if args.val:
        train, val = rows, load_dataset(args.val, args.limit)
    else:
        train, val = _split(rows, args.val_fraction, args.seed)
    if not train:
        raise FlowcError("dataset-invalid", "no training examples left", hint="pass more data or --val")
    metric = _metric(args, compiled)
    budget = Budget(args.budget_calls, args.budget_tokens, args.budget_usd, args.budget_seconds)
    optimizer, model = build_optimizer(args.optimizer, compiled, args)
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
    new = optimized_source(compiled, patched, patch)
    target = (
        source_path
        if args.write
        else Path(args.out)
        if args.out
        else source_path.with_name(source_path.stem + ".optimized" + source_path.suffix)
    )
    target.write_text(new, encoding="utf-8")
    sys.stdout.write(unified_diff(old, new, str(source_path)))
    print(
        f"\nwrote {target}\npatch {run_dir / 'patch.json'}, artifact {art}, candidates {run_dir / 'candidates.jsonl'}"
    )
    return 0
