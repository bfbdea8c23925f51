"""Commands that run pipelines and read the run store: run, runs, trace, serve-model, models.
(`eval` lives in eval_commands.py, `test` in test_commands.py.)"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

from flowc.cli import common
from flowc.runtime.trace import LMCallRecord, RunResult, StepRecord


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a pipeline once and print its outputs")
    p.add_argument("spec", metavar="SPEC", help="a spec file or a compiled artifact (.artifact.json)")
    p.add_argument("--input", "-i", action="append", default=[], metavar="KEY=VALUE", help="an input (repeatable)")
    p.add_argument("--input-file", metavar="FILE", help="a JSON object of inputs")
    p.add_argument("--trace", action="store_true", help="show every step as it completes: inputs, outputs, model calls")
    p.add_argument("--full", action="store_true", help="with --trace: the full prompts and replies")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the response cache")
    common.add_model_flag(p)
    common.add_input_limit_flag(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("runs", help="list recent runs")
    p.add_argument("--limit", "-n", type=int, default=20)
    p.add_argument("--pipeline")
    p.add_argument("--status", choices=("ok", "error", "running", "interrupted"))
    p.add_argument("--json", action="store_true", help="print the runs as JSON")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser("trace", help="show one run step by step")
    p.add_argument("run_id", metavar="RUN_ID", help="a run id (a unique prefix is enough)")
    p.add_argument("--full", action="store_true", help="the rendered prompts and the full replies of every LM call")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_trace)

    p = sub.add_parser("serve-model", help="serve an embedded model as an OpenAI-compatible server on 127.0.0.1")
    p.add_argument("model", nargs="?", default="smollm2", help="a profile (smollm2, qwen-coder-0.5b, ...) or a .gguf")
    p.add_argument("--port", type=int, default=8088)
    p.set_defaults(func=cmd_serve_model)

    p = sub.add_parser("models", help="list the embedded local models and whether they are installed")
    p.add_argument("--prepare", action="store_true", help="assemble and verify every installed model now")
    p.add_argument("--json", action="store_true", help="print the models as JSON")
    p.set_defaults(func=cmd_models)


def cmd_run(args: argparse.Namespace) -> int:
    from flowc.cli.progress import StepProgress

    compiled, meta = common.load(args.spec, args.model)
    inputs = common.parse_inputs(args)
    live = StepProgress(show_steps=not args.trace and not args.json)

    def on_step(run_id: str, step: StepRecord) -> None:
        if args.trace and not args.json:
            live.close()  # the trace is the live view; a spinner would interleave with it
            print_step(step, full=args.full)
            sys.stdout.flush()
        else:
            live.step(run_id, step)

    ex = common.executor(compiled, no_cache=args.no_cache, meta=meta, on_step=on_step)
    run_id = uuid.uuid4().hex[:12]
    try:
        with live:
            result: RunResult = asyncio.run(ex.run(inputs, run_id=run_id))
    except KeyboardInterrupt:
        live.close()
        if ex.store is not None:
            ex.store.mark_interrupted(mine=True)
        print(
            f"\ninterrupted: run {run_id} stopped; the steps it finished are kept in the run store\n"
            f"see them with: flowc trace {run_id}",
            file=sys.stderr,
        )
        return 130
    if args.json:
        print(result.model_dump_json(indent=2))
    else:
        if args.trace:
            print()
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
    retries = result.retries
    print(f"\npath: {' → '.join(result.path)}")
    print(
        f"run {result.run_id}: {len(calls)} LM call(s) ({sum(c.cached for c in calls)} cached"
        + (f", {retries} retried" if retries else "")
        + f"), {result.tokens} tokens, ${result.cost_usd:.4f}, {result.duration_s:.1f}s"
    )


def print_trace(result: RunResult, *, full: bool = False) -> None:
    for s in result.steps:
        print_step(s, full=full)
    print()


def print_step(s: StepRecord, *, full: bool = False) -> None:
    head = f"[{s.seq}] {s.node} ({s.kind}{f', run {s.iteration + 1}' if s.iteration else ''}) {s.duration_s:.2f}s"
    print(head + (f"  ✗ {s.error}" if s.status == "error" else ""))
    for k, v in s.inputs.items():
        print(f"    in  {k} = {_short(v)}")
    for c in s.lm_calls:
        print_call(c, full=full)
    for k, v in s.outputs.items():
        print(f"    out {k} = {_short(v)}")
    if s.note:
        print(f"    note: {s.note}")


def print_call(c: LMCallRecord, *, full: bool) -> None:
    tag = " (cached)" if c.cached else ""
    tries = f", {c.retries} retried" if c.retries else ""
    print(f"    lm  {c.model}: {c.prompt_tokens}+{c.completion_tokens} tokens, {c.latency_s:.2f}s{tag}{tries}")
    for a in c.attempts:
        wait = f", retried after {a.retry_in_s:.2f}s" if a.retry_in_s is not None else ""
        print(
            f"        attempt {a.attempt} ({a.model}) failed after {a.latency_s:.2f}s: {a.error_code}: {a.error}{wait}"
        )
    if c.error:
        print(f"        ✗ {c.error}")
    if full:
        for m in c.request.get("messages", []):
            print(f"        ── {m.get('role')} ──")
            print(_indent(str(m.get("content", "")), 8))
        settings = {k: c.request[k] for k in ("temperature", "max_tokens", "seed", "stop") if c.request.get(k)}
        if settings:
            print(f"        ── settings ── {json.dumps(settings, ensure_ascii=False)}")
        if c.response is not None:
            print("        ── reply ──")
            print(_indent(c.response, 8))


def _indent(text: str, n: int) -> str:
    pad = " " * n
    return "\n".join(pad + line for line in (text.splitlines() or [""]))


def _short(v: Any, n: int = 100) -> str:
    text = v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= n else text[: n - 1] + "…"


def cmd_runs(args: argparse.Namespace) -> int:
    from flowc.runtime.session import home
    from flowc.runtime.store import RunStore

    path = home() / "runs.sqlite"
    if not path.exists():
        print("[]" if args.json else "no runs yet")
        return 0
    rows = RunStore(path).list_runs(args.limit, args.pipeline, args.status)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    print(
        f"{'run':<14}{'pipeline':<20}{'started':<21}{'status':<13}{'secs':>7}{'calls':>7}{'retries':>8}"
        f"{'tokens':>9}{'cost $':>10}"
    )
    for r in rows:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["started"]))
        print(
            f"{r['id']:<14}{r['pipeline']:<20}{started:<21}{r['status']:<13}{(r['duration_s'] or 0):>7.1f}"
            f"{r['lm_calls']:>7}{r['retries']:>8}{r['tokens']:>9}{r['cost_usd']:>10.4f}"
        )
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from flowc.runtime.session import home
    from flowc.runtime.store import RunStore

    store = RunStore(home() / "runs.sqlite")
    run = store.load(args.run_id)
    if args.json:
        print(run.model_dump_json(indent=2))
        return 0
    print(f"run {run.run_id} of {run.pipeline} (artifact {run.artifact_hash[:12]}…): {run.status}")
    models = run.meta.get("models") or {}
    if models:
        overridden = run.meta.get("overrides") or {}
        shown = ", ".join(f"{k}={v}" + (" (--model)" if k in overridden else "") for k, v in models.items())
        print(f"models: {shown}")
    print(f"inputs: {json.dumps(run.inputs, ensure_ascii=False)}\n")
    print_trace(run, full=args.full)
    if run.status in ("running", "interrupted"):
        what = "is still running" if run.status == "running" else "was interrupted"
        print(f"run {run.run_id} {what} after {len(run.steps)} step(s)" + (f": {run.error}" if run.error else ""))
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
    listed = []
    for name, prof in PROFILES.items():
        installed = is_installed(prof)
        state = "installed" if installed else "not installed"
        entry: dict[str, Any] = {"model": f"local/{name}", "installed": installed, "context": prof.context}
        if installed and args.prepare:
            path = gguf_path(name)  # assembles chunked models once, and checks their sha256
            checked = ", sha256 checked" if prof.sha256_prefix else ""
            state = f"ready ({path.stat().st_size / 2**20:.0f} MiB{checked})"
            entry.update(path=str(path), bytes=path.stat().st_size)
        listed.append({**entry, "description": prof.description, "install": prof.install})
        if not args.json:
            print(f"local/{name:<16} {state:<30} {prof.description}")
        if not installed:
            missing.append(prof)
    if args.json:
        print(json.dumps(listed, indent=2))
    elif missing:
        print("\ninstall the quality profiles with: make models", file=sys.stderr)
    return 0
