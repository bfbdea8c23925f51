"""`--executor local|ray`, `--address`, `--workers`: where `flowc eval` and `flowc optimize` run
their examples (docs/scaling.md). The Ray side lives in `flowc.distributed`, imported only when
asked for, so the local path never loads Ray."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from typing import Any

from flowc.errors import FlowcError


def add_executor_flags(p: argparse.ArgumentParser, *, what: str) -> None:
    p.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help=f"run the {what} in this process (local) or on Ray workers (ray; needs the 'ray' extra)",
    )
    p.add_argument(
        "--address",
        metavar="auto|ray://HOST:PORT",
        help="the Ray cluster to use (default: a local Ray instance started for this command)",
    )
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="Ray worker processes (default: one per CPU of the cluster); each runs --concurrency at a time",
    )


def wants_ray(args: argparse.Namespace) -> bool:
    """Whether the command runs on Ray; `--address`/`--workers` without `--executor ray` is refused."""
    if getattr(args, "executor", "local") == "ray":
        if args.workers is not None and args.workers < 1:
            raise FlowcError("invalid-value", f"--workers {args.workers}: need at least one", hint="--workers 2")
        return True
    for flag in ("address", "workers"):
        if getattr(args, flag, None) is not None:
            raise FlowcError(
                "invalid-value",
                f"--{flag} is an option of the Ray executor",
                hint="add --executor ray (or drop --" + flag + ")",
            )
    return False


@contextlib.contextmanager
def eval_dispatch(args: argparse.Namespace, metrics: list[Any], ex: Any) -> Iterator[Any]:
    """None for the local executor; for Ray, a dispatch on workers started for this command."""
    if not wants_ray(args):
        yield None
        return
    from flowc.distributed.eval import metric_args, ray_dispatch

    names = list(args.metric)
    with ray_dispatch(
        address=args.address,
        workers=args.workers,
        per_worker=args.concurrency,
        cache=not args.no_cache,
        metrics=metric_args(names, args.output, args.target),
        store=getattr(ex, "store", None),
    ) as dispatch:
        pool = dispatch.job.pool
        print(
            f"ray: {pool.size} worker(s) × {pool.per_worker} example(s) each"
            + (f" on {args.address}" if args.address else " (a local Ray instance)"),
            file=sys.stderr,
        )
        yield dispatch


@contextlib.contextmanager
def optimize_runner(args: argparse.Namespace, budget: Any) -> Iterator[Any]:
    """For Ray, the job's Scorer batches run on workers started for this command (None: local)."""
    if not wants_ray(args):
        yield None
        return
    from flowc.distributed.scoring import ray_scoring
    from flowc.optimizers.scoring import batch_runner

    budgeted = budget.calls is not None or budget.tokens is not None
    with ray_scoring(args.address, workers=args.workers, cache=False, budgeted=budgeted) as runner:
        pool = runner.job.pool
        print(f"ray: {pool.size} worker(s) run the job's evaluations", file=sys.stderr)
        with batch_runner(runner):
            yield runner
        s = runner.summary()
        retried = len(s["retried"])
        print(
            f"ray: {s['batches']} batch(es) on the workers, {s['local_batches']} in process"
            + (f"; {retried} example(s) ran again after a worker died" if retried else ""),
            file=sys.stderr,
        )


def print_retried(report: dict[str, Any], console: Any) -> None:
    """The Ray executor's line of the summary: workers, and the examples a dead worker left."""
    if report.get("executor") != "ray":
        return
    retried = report.get("retried") or []
    line = f"ray: {report.get('workers')} worker(s)"
    if retried:
        ids = ", ".join(str(r["id"]) for r in retried[:10]) + (", ..." if len(retried) > 10 else "")
        dead = sorted({str(r["worker"]) for r in retried})
        line += f"; {len(retried)} example(s) ran again on another worker after worker(s) {', '.join(dead)} died: {ids}"
    console.print(line, markup=False)
