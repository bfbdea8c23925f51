"""Commands that run pipelines: run, eval, runs, trace, serve-model, models."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import flowc
from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.runtime.config import RunConfig
from flowc.runtime.trace import RunResult


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a pipeline once and print its outputs")
    p.add_argument("spec", metavar="SPEC", help="a spec file or a compiled artifact (.artifact.json)")
    p.add_argument("--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="an input (repeatable)")
    p.add_argument("--input-file", metavar="FILE", help="a JSON object of inputs")
    p.add_argument("--trace", action="store_true", help="show every step: inputs, outputs, model calls")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("eval", help="run a pipeline over a dataset and score it")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--data", required=True, metavar="FILE.jsonl", help="one JSON object per line")
    p.add_argument("--metric", "-m", action="append", default=[], help="metric name (repeatable; default: the spec's)")
    p.add_argument("--output", help="the pipeline output to score (default: the first)")
    p.add_argument("--target", help="the dataset field holding the gold answer (default: same name as --output)")
    p.add_argument("--limit", type=int, help="only the first N examples")
    p.add_argument("--concurrency", "-c", type=int, default=4)
    p.add_argument("--out", help="evaluation directory (default .flowc/evals/<pipeline>-<data>)")
    p.add_argument("--resume", action="store_true", help="continue a killed evaluation; repeats nothing done")
    p.add_argument("--no-cache", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("runs", help="list recent runs")
    p.add_argument("--limit", "-n", type=int, default=20)
    p.add_argument("--pipeline")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("trace", help="show one run step by step")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id (a unique prefix is enough)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("serve-model", help="serve an embedded model as an OpenAI-compatible server on 127.0.0.1")
    p.add_argument("model", nargs="?", default="smollm2", help="a profile (smollm2, qwen-coder-0.5b, ...) or a .gguf")
    p.add_argument("--port", type=int, default=8088)
    p.set_defaults(func=cmd_serve_model)

    p = sub.add_parser("models", help="list the embedded local models and whether they are installed")
    p.add_argument("--prepare", action="store_true", help="assemble and verify every installed model now")
    p.set_defaults(func=cmd_models)


def _load(spec: str) -> CompiledPipeline:
    if spec.endswith(".artifact.json"):
        return CompiledPipeline.from_artifact(spec)
    return flowc.compile(spec)


def _parse_inputs(args: argparse.Namespace) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    if args.input_file:
        try:
            loaded = json.loads(Path(args.input_file).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise FlowcError(
                "dataset-invalid",
                f"cannot read inputs from '{args.input_file}': {e}",
                hint="write a JSON object of input names to values",
            ) from None
        if not isinstance(loaded, dict):
            raise FlowcError(
                "dataset-invalid",
                f"'{args.input_file}' holds a JSON {type(loaded).__name__}, not an object of inputs",
                hint='write a JSON object of input names to values, e.g. {"question": "..."}',
            )
        inputs.update(loaded)
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep:
            raise FlowcError(
                "missing-pipeline-input",
                f"--input '{item}' is not KEY=VALUE",
                hint='write --input question="What is ...?"',
            )
        inputs[key.strip()] = value
    return inputs


def _executor(compiled: CompiledPipeline, no_cache: bool) -> Any:
    from flowc.runtime.session import open_executor

    return open_executor(compiled, cache=not no_cache, config=RunConfig())


def cmd_run(args: argparse.Namespace) -> int:
    compiled = _load(args.spec)
    inputs = _parse_inputs(args)
    ex = _executor(compiled, args.no_cache)
    result: RunResult = asyncio.run(ex.run(inputs))
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        if args.trace:
            print_trace(result)
        print_result(result)
    return 0 if result.status == "ok" else 1


def print_result(result: RunResult) -> None:
    if result.status != "ok":
        print(f"run {result.run_id} failed after {len(result.steps)} step(s):\n  {result.error}", file=sys.stderr)
        print(f"  see: flowc trace {result.run_id}", file=sys.stderr)
        return
    for name, value in result.outputs.items():
        shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, indent=2)
        print(f"{name}: {shown}")
    calls = result.lm_calls
    print(f"\npath: {' → '.join(result.path)}")
    print(
        f"run {result.run_id}: {len(calls)} LM call(s) ({sum(c.cached for c in calls)} cached), "
        f"{result.tokens} tokens, ${result.cost_usd:.4f}, {result.duration_s:.1f}s"
    )


def print_trace(result: RunResult) -> None:
    for s in result.steps:
        head = f"[{s.seq}] {s.node} ({s.kind}{f', run {s.iteration + 1}' if s.iteration else ''}) {s.duration_s:.2f}s"
        print(head + (f"  ✗ {s.error}" if s.status == "error" else ""))
        for k, v in s.inputs.items():
            print(f"    in  {k} = {_short(v)}")
        for c in s.lm_calls:
            tag = " (cached)" if c.cached else ""
            print(f"    lm  {c.model}: {c.prompt_tokens}+{c.completion_tokens} tokens, {c.latency_s:.2f}s{tag}")
            if c.error:
                print(f"        ✗ {c.error}")
        for k, v in s.outputs.items():
            print(f"    out {k} = {_short(v)}")
        if s.note:
            print(f"    note: {s.note}")
    print()


def _short(v: Any, n: int = 100) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= n else text[: n - 1] + "…"


def cmd_eval(args: argparse.Namespace) -> int:
    from flowc.runtime.evaluate import bind_metrics, evaluate, load_dataset
    from flowc.runtime.session import home

    compiled = _load(args.spec)
    records = load_dataset(args.data, args.limit)
    default_output = next(iter(compiled.spec.outputs))
    metrics = bind_metrics(compiled.spec.metrics, args.metric, args.output, args.target, default_output)
    if not metrics:
        raise FlowcError(
            "unknown-metric",
            "no metric to score with",
            hint="pass --metric exact_match (or declare 'metric' in the spec)",
        )
    out = Path(args.out) if args.out else home() / "evals" / f"{compiled.name}-{Path(args.data).stem}"
    ex = _executor(compiled, args.no_cache)
    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        width = 30
        filled = int(width * done / total) if total else width
        rate = (time.perf_counter() - started) / max(done, 1)
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}  {rate:.1f}s/example",
            end="",
            file=sys.stderr,
            flush=True,
        )

    report = asyncio.run(
        evaluate(ex, records, metrics, out, concurrency=args.concurrency, resume=args.resume, on_progress=progress)
    )
    print(file=sys.stderr)
    print(f"\n{compiled.name} on {args.data}: {report['examples']} examples, {report['errors']} errors")
    print(f"{'metric':<20} {'score':>8}")
    for name, score in report["metrics"].items():
        print(f"{name:<20} {score:>8.3f}")
    print(
        f"\nLM calls {report['lm_calls']} ({report['cached_calls']} cached), tokens {report['tokens']}, "
        f"${report['cost_usd']:.4f}, {report['seconds_per_example']:.2f}s per example"
    )
    print(f"report: {out / 'report.json'}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    from flowc.runtime.session import home
    from flowc.runtime.store import RunStore

    path = home() / "runs.sqlite"
    if not path.exists():
        print("no runs yet")
        return 0
    rows = RunStore(path).list_runs(args.limit, args.pipeline)
    print(f"{'run':<14}{'pipeline':<20}{'started':<21}{'status':<9}{'secs':>7}{'calls':>7}{'tokens':>8}")
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
        print(
            f"{r['id']:<14}{r['pipeline']:<20}{started:<21}{r['status']:<9}{(r['duration_s'] or 0):>7.1f}"
            f"{(r['lm_calls'] or 0):>7}{(r['tokens'] or 0):>8}"
        )
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from flowc.runtime.session import home
    from flowc.runtime.store import RunStore

    store = RunStore(home() / "runs.sqlite")
    run = store.load(args.run_id)
    # RunResult knows only ok/error; the store also knows a run that never finished (still
    # running, or killed), which must not be shown as a success.
    status = store.status_of(run.run_id)
    if args.json:
        data = json.loads(run.model_dump_json())
        data["status"] = status  # "running" for an unfinished run, as the store knows it
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    print(f"run {run.run_id} of {run.pipeline} (artifact {run.artifact_hash[:12]}…): {status}")
    print(f"inputs: {json.dumps(run.inputs, ensure_ascii=False)}\n")
    print_trace(run)
    if status == "running":
        print(f"run {run.run_id} has not finished (still running, or killed) after {len(run.steps)} step(s)")
    else:
        print_result(run)
    return 0


def cmd_serve_model(args: argparse.Namespace) -> int:
    from flowc.runtime.local_provider import serve_forever, serve_model

    served = serve_model(args.model, port=args.port)
    print(f"serving {args.model} at {served.base_url} (OpenAI-compatible); Ctrl-C to stop", flush=True)
    print(f'use it from a spec: model m = "openai/{args.model}" {{ api_base: "{served.base_url}" }}', flush=True)
    try:
        serve_forever(served)
    except KeyboardInterrupt:
        pass
    finally:
        served.stop()
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from flowc.runtime.local_profiles import PROFILES, gguf_path, is_installed

    missing = []
    for name, prof in PROFILES.items():
        state = "installed" if is_installed(prof) else "not installed"
        if state == "installed" and args.prepare:
            path = gguf_path(name)  # assembles chunked models once, and checks their sha256
            checked = ", sha256 checked" if prof.sha256_prefix else ""
            state = f"ready ({path.stat().st_size / 2**20:.0f} MiB{checked})"
        print(f"local/{name:<16} {state:<30} {prof.description}")
        if state == "not installed":
            missing.append(prof)
    if missing:
        print("\ninstall the quality profiles with: make models", file=sys.stderr)
    return 0
