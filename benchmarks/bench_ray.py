"""The Ray executor's throughput: the local executor against Ray with 2 and 4 workers.

1. A one-call pipeline over 1,000 examples against the fake OpenAI server (its own process) at
   100 ms per call: wall time, CPU (driver and workers), calls/s, and the ratio to the ideal (the
   wall time if every slot were busy with nothing but the 100 ms: examples × latency / slots).
   Each configuration has the same slots per process (`-c`); the local executor is also run with
   as many slots as the largest Ray configuration, since on one machine an I/O-bound evaluation
   is served by one asyncio process too — the honest baseline.
2. The embedded model (`local/smollm2`) with one replica per worker: completion tokens/s for
   1 process, 2 and 4 workers on the same prompts.

    python benchmarks/bench_ray.py [--examples 1000] [--latency 0.1] [-c 16] [--workers 2,4]
                                   [--local-examples 24] [--skip-local-model]

Ray's start-up (seconds, under load tens of seconds) is measured apart and not in the wall times.
Writes benchmarks/results/ray.json. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import machine, package_version, write_results

import flowc
from flowc.runtime.evaluate import bind_metrics, evaluate
from flowc.runtime.session import open_executor

SERVER = """
import sys, threading, signal
from flowc.testing.fake_server import FakeOpenAIServer, Reply
srv = FakeOpenAIServer(default=Reply(text="Paris", latency_s=float(sys.argv[1])), record=False).start()
print(srv.base_url, flush=True)
done = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: done.set())
done.wait()
srv.stop()
"""

SPEC = """
pipeline one_call {{
  input question: str
  output answer: str <- answer.answer
  model m = "{model}"{decl}
  node answer: llm {{
    prompt: "Answer in one word. {{{{question}}}}"
    question <- question
    output answer: str
  }}
  metric em: exact_match(output = answer, target = answer)
}}
"""


def compile_spec(work: Path, name: str, model: str, decl: str = "") -> flowc.CompiledPipeline:
    path = work / f"{name}.flow"
    path.write_text(SPEC.format(model=model, decl=decl), encoding="utf-8")
    return flowc.compile(str(path))


def records(n: int) -> list[dict[str, Any]]:
    return [
        {"id": f"q{i:05d}", "question": f"What is the capital of country {i}?", "answer": "Paris"} for i in range(n)
    ]


def cpu_now() -> float:
    t = os.times()
    return t.user + t.system


def run_eval(
    compiled: flowc.CompiledPipeline, recs: list[dict[str, Any]], work: Path, label: str, *, slots: int, job: Any = None
) -> dict[str, Any]:
    """One evaluation, timed; `job` a Ray job (its workers already started) or None (local)."""
    from flowc.runtime.evaluate import Dispatch

    root = work / label
    ex = open_executor(compiled, cache=False, root=root)
    metrics = bind_metrics(compiled.spec.metrics, [], None, None, "answer")
    dispatch: Dispatch | None = None
    workers_cpu0 = 0.0
    if job is not None:
        from flowc.distributed.eval import RayDispatch, metric_args

        dispatch = RayDispatch(job, metric_args([], None, None), store=ex.store)
        workers_cpu0 = sum(job.ray.get([w.handle.cpu_seconds.remote() for w in job.pool.workers]))
    cpu0, t0 = cpu_now(), time.perf_counter()
    report = asyncio.run(evaluate(ex, recs, metrics, root / "eval", concurrency=slots, dispatch=dispatch))
    wall = time.perf_counter() - t0
    if ex.store is not None:
        ex.store.flush()
    driver_cpu = cpu_now() - cpu0
    workers_cpu = None
    if job is not None:
        workers_cpu = sum(job.ray.get([w.handle.cpu_seconds.remote() for w in job.pool.workers])) - workers_cpu0
    return {
        "label": label,
        "examples": report["examples"],
        "errors": report["errors"],
        "lm_calls": report["lm_calls"],
        "wall_s": round(wall, 3),
        "driver_cpu_s": round(driver_cpu, 3),
        "workers_cpu_s": round(workers_cpu, 3) if workers_cpu is not None else None,
        "calls_per_s": round(report["lm_calls"] / wall, 2),
        "report": report,
    }


def fake_server_section(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.latency)], stdout=subprocess.PIPE, text=True, cwd=work
    )
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        compiled = compile_spec(work, "one_call", "openai/fake", f' {{ api_base: "{base}" }}')
        recs = records(args.examples)
        rows = []
        configs: list[tuple[str, int, int | None]] = [("local", args.concurrency, None)]
        most = max(args.workers)
        configs.append((f"local c={most * args.concurrency}", most * args.concurrency, None))
        configs += [(f"ray {w} workers", args.concurrency, w) for w in args.workers]
        for label, slots, workers in configs:
            if workers is None:
                row = run_eval(compiled, recs, work, label.replace(" ", "_").replace("=", ""), slots=slots)
                row["slots"] = slots
            else:
                row = with_ray(
                    workers,
                    args.concurrency,
                    lambda job, lbl=label: run_eval(
                        compiled, recs, work, lbl.replace(" ", "_"), slots=args.concurrency, job=job
                    ),
                )
                row["slots"] = workers * args.concurrency
            row["label"] = label
            ideal = args.examples * args.latency / row["slots"]
            row["ideal_wall_s"] = round(ideal, 3)
            row["ratio_to_ideal"] = round(ideal / row["wall_s"], 3)
            row.pop("report")
            rows.append(row)
            print_row(row)
        return {
            "latency_s": args.latency,
            "examples": args.examples,
            "per_process_slots": args.concurrency,
            "runs": rows,
        }
    finally:
        server.terminate()
        server.wait(10)


def with_ray(workers: int, per_worker: int, body: Any) -> dict[str, Any]:
    """Start a local Ray instance with `workers` workers, run `body(job)`, tear it down; adds the
    start-up time."""
    from flowc.distributed.cluster import ray_job

    t0 = time.perf_counter()
    with ray_job(None, workers=workers, per_worker=per_worker, cache=False) as job:
        started = time.perf_counter() - t0
        row = body(job)
    row["ray_start_s"] = round(started, 2)
    row["workers"] = workers
    return row


def local_model_section(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    compiled = compile_spec(work, "one_call_local", "local/smollm2", " { max_tokens: 24 }")
    recs = records(args.local_examples)
    rows = []
    for workers in [None, *args.workers]:
        label = "local" if workers is None else f"ray {workers} workers"
        slug = "model_" + label.replace(" ", "_")
        if workers is None:
            run_eval(compiled, recs[:1], work, slug + "_warm", slots=1)  # load the model off the clock
            row = run_eval(compiled, recs, work, slug, slots=1)
            tokens = row["report"]["tokens"]
        else:
            row = with_ray(workers, 1, lambda job, s=slug: warm_then_run(job, compiled, recs, work, s))
            tokens = row["report"]["tokens"]
        row["label"] = label
        row["tokens"] = tokens  # prompt + completion
        row["completion_tokens"] = completion_tokens(work / slug)
        row["tokens_per_s"] = round(row["completion_tokens"] / row["wall_s"], 1)
        row.pop("report")
        rows.append(row)
        print_row(row, extra=f"completion tokens/s {row['tokens_per_s']}")
    base = rows[0]["tokens_per_s"] or 1.0
    for row in rows:
        row["speedup"] = round(row["tokens_per_s"] / base, 2)
    return {"model": "local/smollm2", "examples": args.local_examples, "max_tokens": 24, "runs": rows}


def completion_tokens(root: Path) -> int:
    """The completion tokens of every run of an evaluation, from its run store."""
    from flowc.runtime.store import RunStore

    rows = json.loads((root / "eval" / "report.json").read_text(encoding="utf-8"))["examples"]
    store = RunStore(root / "runs.sqlite")
    return sum(c.completion_tokens for r in rows for c in store.load(r["run_id"]).lm_calls)


def warm_then_run(job: Any, compiled: flowc.CompiledPipeline, recs: list[dict[str, Any]], work: Path, slug: str):
    """Each worker loads its replica before the clock starts (as the local run does)."""
    run_eval(compiled, recs[: len(job.pool.workers)], work, slug + "_warm", slots=1, job=job)
    return run_eval(compiled, recs, work, slug, slots=1, job=job)


def print_row(row: dict[str, Any], extra: str = "") -> None:
    cpu = f"driver CPU {row['driver_cpu_s']:.1f}s" + (
        f", workers CPU {row['workers_cpu_s']:.1f}s" if row.get("workers_cpu_s") is not None else ""
    )
    ratio = f", {row['ratio_to_ideal']:.2f} of ideal" if "ratio_to_ideal" in row else ""
    print(
        f"{row['label']:<18} {row['examples']} examples in {row['wall_s']:.2f}s "
        f"({row['calls_per_s']:.1f} calls/s{ratio}); {cpu}" + (f"; {extra}" if extra else ""),
        flush=True,
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--latency", type=float, default=0.1)
    p.add_argument("--concurrency", "-c", type=int, default=16, help="slots per process")
    p.add_argument("--workers", default="2,4", help="comma-separated Ray worker counts")
    p.add_argument("--local-examples", type=int, default=24)
    p.add_argument("--skip-local-model", action="store_true")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "ray.json"))
    args = p.parse_args()
    args.workers = [int(w) for w in args.workers.split(",") if w]
    work = Path(tempfile.mkdtemp(prefix="flowc-bench-ray-"))
    os.environ["FLOWC_HOME"] = str(work / "home")
    os.chdir(work)
    before = machine()
    results: dict[str, Any] = {"ray": package_version("ray"), "machine_at_start": before}
    results["fake_server"] = fake_server_section(args, work)
    if not args.skip_local_model:
        results["embedded_model"] = local_model_section(args, work)
    results["note"] = (
        "measured side by side in one run; the machine's load average is recorded at start and end "
        "(other processes share the CPUs when it is high)"
    )
    results["machine"] = machine()
    write_results(args.out, results)
    print(json.dumps({"load_average_1min": [before["load_average_1min"], results["machine"]["load_average_1min"]]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
