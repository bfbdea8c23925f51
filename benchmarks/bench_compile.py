"""Compile time against spec size: is `flowc compile` fast and linear?

    .venv/bin/python benchmarks/bench_compile.py [--sizes 100,1000,10000] [--runs 3] [--seed 0]

For each size, `flowc.testing.generators.synthetic_spec(n, seed)` (a mix of llm, retrieve, tool
and map nodes, routers with fallbacks and bounded loops) is printed as `.flow` text, and the path
`flowc.compile(text)` takes is timed stage by stage, median of `--runs` runs:

- parse: `.flow` text → plain data and span table (lark LALR + the tree walk);
- check: that data → validated spec models (`build_pipeline`: the spec's shape, names, types);
- lower: spec → FlowGraph (names resolved, edges typed, loops marked);
- passes: every default pass, each followed by IR verification (as `compile` runs them);
- artifact: the frozen CompiledPipeline and its content hash;
- total: the sum; `cpu` the process CPU time of the same run (less disturbed by other load on
  the machine); `gc` the part of it spent in Python's cyclic garbage collector, which grows faster
  than linearly with the number of live objects; `compile` is one end-to-end `flowc.compile(text)`
  call, as a cross-check.

Prints a table and writes `benchmarks/results/compile.json` with the figures, the time per pass
and the growth ratio per 10× size (≈10 for linear growth).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import machine, write_results  # noqa: E402

import flowc  # noqa: E402
from flowc.compile import CompiledPipeline, sha256  # noqa: E402
from flowc.ir.lower import lower  # noqa: E402
from flowc.ir.verify import verify  # noqa: E402
from flowc.passes.base import PassContext  # noqa: E402
from flowc.passes.pipeline import default_passes  # noqa: E402
from flowc.source import SourceFile  # noqa: E402
from flowc.spec.build import build_pipeline  # noqa: E402
from flowc.syntax.parser import grammar, parse_flow_data  # noqa: E402
from flowc.syntax.printer import print_flow  # noqa: E402
from flowc.testing.generators import synthetic_spec  # noqa: E402

STAGES = ("parse", "check", "lower", "passes", "artifact")


class GCClock:
    """CPU seconds spent in Python's cyclic garbage collector (via `gc.callbacks`)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.process_time()
        else:
            self.total += time.process_time() - self._start


GC = GCClock()
gc.callbacks.append(GC)


CPU: dict[str, float] = {}  # CPU seconds of the stages of the last run


def timed(fn: Callable[[], Any], stage: str = "") -> tuple[Any, float]:
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if stage:
        CPU[stage] = time.process_time() - c
    return out, time.perf_counter() - t


def one_run(text: str, path: str) -> dict[str, Any]:
    gc.collect()
    gc0, cpu0 = GC.total, time.process_time()
    source = SourceFile(path, text)
    (data, spans, diags), t_parse = timed(lambda: parse_flow_data(source), "parse")
    assert data is not None and not diags, diags
    spec, t_check = timed(lambda: build_pipeline(data, spans, source), "check")
    (graph, ldiags), t_lower = timed(lambda: lower(spec, {}), "lower")
    ctx = PassContext(spec, list(ldiags))
    per_pass: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    verify(graph, "lower")
    per_pass["verify-lower"] = time.perf_counter() - t0
    for p in default_passes():
        t = time.perf_counter()
        graph = p.run(graph, ctx)
        verify(graph, p.name)
        per_pass[p.name] = time.perf_counter() - t
    t_passes = time.perf_counter() - t0
    CPU["passes"] = time.process_time() - c0
    assert not ctx.has_errors, [d.code for d in ctx.diagnostics][:5]

    def artifact() -> CompiledPipeline:
        spec_hash = sha256({"spec": spec.dump(), "subflows": {}})
        cost = ctx.results.get("estimate-cost")
        c = CompiledPipeline(spec, graph, {}, tuple(per_pass), tuple(ctx.diagnostics), cost, spec_hash)  # type: ignore[arg-type]
        object.__setattr__(c, "hash", c.to_artifact()["hash"])
        return c

    _, t_art = timed(artifact, "artifact")
    gc_s, cpu = GC.total - gc0, time.process_time() - cpu0
    stages = {"parse": t_parse, "check": t_check, "lower": t_lower, "passes": t_passes, "artifact": t_art}
    total = sum(stages.values())
    cpu_stages = {f"cpu_{k}": CPU[k] for k in STAGES}
    return {**stages, "total": total, "cpu": cpu, **cpu_stages, "gc": gc_s, "per_pass": per_pass}


def compile_run(text: str) -> float:
    gc.collect()
    _, t = timed(lambda: flowc.compile(text))
    return t


def bench(n: int, runs: int, seed: int) -> dict[str, Any]:
    spec = synthetic_spec(n, seed)
    text = print_flow(spec)
    results = []
    for _ in range(runs):
        results.append(one_run(text, f"synthetic_{n}.flow"))
        results[-1]["compile"] = compile_run(text)
    keys = (*STAGES, "total", *(f"cpu_{k}" for k in STAGES), "cpu", "gc", "compile")
    med = {k: statistics.median(r[k] for r in results) for k in keys}
    passes = {p: statistics.median(r["per_pass"][p] for r in results) for p in results[0]["per_pass"]}
    kinds: dict[str, int] = {}
    for node in spec.nodes.values():
        kinds[node.kind] = kinds.get(node.kind, 0) + 1
    return {
        "nodes": n,
        "chars": len(text),
        "lines": text.count("\n"),
        "node_kinds": kinds,
        "routers": sum(
            1 for nd in spec.nodes.values() if any("route[" in str(t) for t in getattr(nd, "outputs", {}).values())
        ),
        "loops": len(spec.loops),
        "seconds": med,
        "per_pass": passes,
        "runs": runs,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "compile.json"))
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    grammar()  # built once per process; not part of any spec's compile time
    flowc.compile(print_flow(synthetic_spec(10, args.seed)))  # warm imports and caches
    rows = []
    for n in sizes:
        row = bench(n, args.runs, args.seed)
        rows.append(row)
        s = row["seconds"]
        print(
            f"{n:>6} nodes {row['chars']:>9,} chars | "
            + " ".join(f"{k} {s[k]:7.3f}" for k in STAGES)
            + f" | total {s['total']:7.3f} s (cpu {s['cpu']:.3f}, gc {s['gc']:.3f}; compile() {s['compile']:.3f} s)",
            flush=True,
        )
    growth = {}
    for a, b in itertools.pairwise(rows):
        factor = b["nodes"] / a["nodes"]
        key = f"{a['nodes']}->{b['nodes']}"
        growth[key] = {
            "size_factor": factor,
            **{
                k: round(b["seconds"][k] / a["seconds"][k], 2)
                for k in (*STAGES, "total", *(f"cpu_{k}" for k in STAGES), "cpu", "gc")
            },
            "cpu_without_gc": round(
                (b["seconds"]["cpu"] - b["seconds"]["gc"]) / (a["seconds"]["cpu"] - a["seconds"]["gc"]), 2
            ),
            "total_without_gc": round(
                (b["seconds"]["total"] - b["seconds"]["gc"]) / (a["seconds"]["total"] - a["seconds"]["gc"]), 2
            ),
        }
    print()
    header = f"{'stage':<13}" + "".join(f"{n:>12,}" for n in sizes) + "".join(f"{k:>16}" for k in growth)
    print(header)
    for k in (*STAGES, "total", *(f"cpu_{k}" for k in STAGES), "cpu", "gc"):
        cells = "".join(f"{r['seconds'][k]:>11.3f}s" for r in rows)
        ratios = "".join(f"{g[k]:>15.1f}×" for g in growth.values())
        print(f"{k:<13}{cells}{ratios}")
    print("\nper pass (incl. IR verification), seconds:")
    for p in rows[0]["per_pass"]:
        print(f"  {p:<20}" + "".join(f"{r['per_pass'][p]:>10.3f}" for r in rows))
    one_k = next((r for r in rows if r["nodes"] == 1000), None)
    result = {
        "benchmark": "compile time vs spec size (synthetic_spec, .flow text → CompiledPipeline)",
        "machine": {**machine(), "load_average_at_end": os.getloadavg()},
        "seed": args.seed,
        "sizes": rows,
        "growth_per_10x": growth,
        "goal": {
            "1000_nodes_under_1s": None if one_k is None else one_k["seconds"]["total"] < 1.0,
            "1000_nodes_under_1s_cpu": None if one_k is None else one_k["seconds"]["cpu"] < 1.0,
            "linear": all(g["total"] <= 1.5 * g["size_factor"] for g in growth.values()),
            "linear_cpu": all(g["cpu"] <= 1.5 * g["size_factor"] for g in growth.values()),
            "linear_cpu_without_gc": all(g["cpu_without_gc"] <= 1.5 * g["size_factor"] for g in growth.values()),
        },
    }
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times suffer when it is high)\n")
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
