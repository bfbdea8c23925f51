"""`flowc eval`: score a pipeline on a dataset, or compare two evaluations (`--compare A B`).

Exit codes: 0 every example ran (or no more failed than --max-errors); 1 more failed, or a bad
spec/dataset; 2 bad usage; 130 interrupted (what was kept and the command that resumes are printed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from flowc.cli import common
from flowc.errors import FlowcError


def register(sub: Any) -> None:
    p = sub.add_parser("eval", help="run a pipeline over a dataset and score it (or --compare two evaluations)")
    p.add_argument("spec", metavar="SPEC", nargs="?")
    p.add_argument("--data", metavar="FILE.jsonl", help="one JSON object per line")
    p.add_argument(
        "--metric",
        "-m",
        action="append",
        default=[],
        help="metric name, or MODULE:FUNCTION for your own Python metric (repeatable; default: the spec's)",
    )
    p.add_argument("--output", help="the pipeline output to score (default: the first)")
    p.add_argument("--target", help="the dataset field holding the gold answer (default: same name as --output)")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="INPUT=COLUMN",
        help="read pipeline input INPUT from dataset field COLUMN (repeatable)",
    )
    p.add_argument("--limit", type=int, help="only the first N examples")
    p.add_argument("--concurrency", "-c", type=int, default=4)
    p.add_argument("--out", help="the evaluation folder (default: a new one under .flowc/evals/<pipeline>-<data>/)")
    p.add_argument(
        "--resume", action="store_true", help="continue the latest (or --out) evaluation; failed examples run again"
    )
    p.add_argument("--max-errors", type=int, default=0, metavar="N", help="exit 0 even if up to N examples fail")
    p.add_argument("--fail-fast", action="store_true", help="stop once more than --max-errors examples failed")
    p.add_argument("--show", type=int, default=10, metavar="N", help="per-example rows to print (worst first; 0: none)")
    p.add_argument("--export", metavar="FILE", help="write the per-example table to FILE (.csv or .jsonl)")
    p.add_argument("--json", action="store_true", help="print the report as JSON (no table)")
    p.add_argument("--no-cache", action="store_true")
    common.add_model_flag(p)
    common.add_input_limit_flag(p)
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("RUN_A", "RUN_B"),
        help="compare two evaluations (folders or folder names) example by example; runs nothing",
    )
    p.add_argument("--confidence", type=float, default=0.95, help="the --compare interval's confidence")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    if not args.spec or not args.data:  # bad usage, as argparse would say it (exit 2)
        print(
            "flowc eval: error: needs a SPEC and --data (or --compare RUN_A RUN_B), "
            "e.g. flowc eval rag.flow --data questions.jsonl --metric f1",
            file=sys.stderr,
        )
        return 2
    from flowc.cli.eval_views import export_rows, out_console, print_summary, worst_rows
    from flowc.cli.progress import EvalProgress
    from flowc.runtime import evaldir
    from flowc.runtime.datasets import load_dataset, map_columns, parse_column_map
    from flowc.runtime.evaluate import StopPolicy, bind_metrics, evaluate
    from flowc.runtime.judge import judge_for
    from flowc.runtime.session import home

    compiled, meta = common.load(args.spec, args.model)
    records = load_dataset(args.data, args.limit, max_bytes=args.max_input_bytes)
    records = map_columns(records, parse_column_map(args.map, compiled.spec.inputs))
    default_output = next(iter(compiled.spec.outputs))
    ex = common.executor(compiled, no_cache=args.no_cache, meta=meta)
    metrics = bind_metrics(
        compiled.spec.metrics,
        args.metric,
        args.output,
        args.target,
        default_output,
        judge_of=lambda name, model: judge_for(name, model, compiled.spec.models, ex.lm),
    )
    if not metrics:
        raise FlowcError(
            "unknown-metric",
            "no metric to score with",
            hint="pass --metric exact_match (or declare 'metric' in the spec)",
        )
    out = _eval_dir(args, compiled.name, home() / "evals")
    meta = {
        **meta,
        "spec": args.spec,
        "data": args.data,
        "metrics": [m.name for m in metrics],
        "artifact_hash": compiled.hash,
        "argv": getattr(args, "argv", None),
    }
    progress = EvalProgress(f"eval {compiled.name}", metrics[0].name)
    try:
        with progress:
            report = asyncio.run(
                evaluate(
                    ex,
                    records,
                    metrics,
                    out,
                    concurrency=args.concurrency,
                    resume=args.resume,
                    on_progress=progress.update,
                    stop=StopPolicy(args.max_errors, args.fail_fast),
                    meta=meta,
                )
            )
    except KeyboardInterrupt:
        progress.close()
        kept = len(evaldir.read_rows(out))
        _interrupted_runs(ex)
        print(
            f"\ninterrupted: {kept} of {len(records)} examples are done and kept in {out / evaldir.RESULTS}\n"
            f"resume with: "
            + common.resume_command(
                getattr(args, "argv", None) or sys.argv[1:], add={"--out": str(out), "--resume": None}
            ),
            file=sys.stderr,
        )
        return 130
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False, default=repr))
    else:
        console = out_console()
        print_summary(report, args.data, console)
        rows = json.loads((out / evaldir.REPORT).read_text(encoding="utf-8"))["examples"]
        if args.show > 0 and rows:
            from flowc.cli.eval_views import example_table

            shown = worst_rows(rows, metrics[0].name, args.show)
            title = f"\n{len(shown)} of {len(rows)} examples, failed and lowest first"
            console.print(example_table(shown, [m.name for m in metrics], title))
        console.print(f"\nreport: {out / evaldir.REPORT}", markup=False)
    if args.export:
        rows = json.loads((out / evaldir.REPORT).read_text(encoding="utf-8"))["examples"]
        export_rows(rows, Path(args.export))
        if not args.json:
            print(f"table: {args.export}")
    return 1 if report["errors"] > args.max_errors else 0


def _eval_dir(args: argparse.Namespace, pipeline: str, root: Path) -> Path:
    from flowc.runtime import evaldir

    if args.out:
        return Path(args.out)
    parent = root / f"{pipeline}-{Path(args.data).stem}"
    if args.resume:
        latest = evaldir.latest_eval_dir(parent)
        if latest is None:
            raise FlowcError(
                "run-not-found",
                f"nothing to resume: no evaluation of '{pipeline}' on '{args.data}' under {parent}",
                hint="run it without --resume first (or name the folder with --out)",
            )
        return latest
    return evaldir.new_eval_dir(parent)


def _interrupted_runs(ex: Any) -> None:
    """The runs this process was in the middle of: marked 'interrupted' now, not left 'running'."""
    store = getattr(ex, "store", None)
    if store is not None and hasattr(store, "mark_interrupted"):
        store.mark_interrupted(mine=True)


def _compare(args: argparse.Namespace) -> int:
    from flowc.cli.eval_views import comparison_json, out_console, print_comparison
    from flowc.runtime.compare import compare
    from flowc.runtime.evaldir import resolve_eval_ref
    from flowc.runtime.session import home

    root = home() / "evals"
    a, b = (resolve_eval_ref(r, root) for r in args.compare)
    result = compare(a, b, metrics=list(args.metric) or None, confidence=args.confidence)
    if args.json:
        print(json.dumps(comparison_json(result), indent=2))
    else:
        print_comparison(result, out_console())
    return 0
