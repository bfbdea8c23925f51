"""Runtime benchmarks of issue 14: flowc beside DSPy's default engine, raw litellm and plain HTTP.

    .venv/bin/python benchmarks/bench_runtime.py [--sections a,b,c,d,e,f,h] [--runs 150] [--rounds 3]

Every figure is a ratio measured side by side in one run against an OpenAI-compatible fake server
(flowc.testing.fake_server) in its own process, so only the clients' work is on the measured
process. DSPy rows need the `dspy` extra (make .venv/.test installs it); without it they are skipped
and said so. Goals (issue 14) are printed beside each figure.

(a) Per LM call, sequential: a 4-node chain at zero latency, one pipeline run of each system in
    turn in a rotating order (load drift hits all alike): flowc on its native transport, with the
    run store on, and with `transport: litellm`; DSPy 3.x's default engine and its litellm engine
    (a dspy.Module of chained dspy.Predict); raw `litellm.acompletion`; plain aiohttp POSTs (the
    floor). Median wall ms and mean CPU ms per call. Goals: flowc <= 0.8x DSPy's default engine;
    the litellm path no slower than before (its overhead over raw litellm is printed).
    Then flowc's own work per call with the HTTP call stubbed (no I/O: an in-process answer at the
    aiohttp session / litellm.acompletion), store off and on. Goals: own work <= 0.15 ms per call;
    the run store adds <= 0.1 ms per call. A cProfile of the hot path goes to
    $TMPDIR/flowc_bench_runtime_executor.prof.
(b) Fan-out: 8 independent llm nodes at 100 ms joined by one: wall vs the critical path (0.2 s),
    beside DSPy (asyncio.gather of acall, then the join) and plain aiohttp in the same shape. Goal <= 1.08x.
(c) Batch: 200 inputs through a 3-call chain at concurrency 16: at 100 ms per call, wall vs the ideal
    (200 / 16 x 3 x 0.1 s) for flowc's run_batch and DSPy's Module.batch (16 threads); at zero latency,
    throughput (pipelines/s) of both. Goals: <= 1.10x the ideal; throughput >= DSPy's .batch.
(d) Cached rerun: the 100 ms batch twice through open_executor (cache on): calls reaching the model on
    the second pass (goal 0).
(e) Embedded model: tokens/s of `local/smollm2` through the Executor vs xllamacpp directly (goal >= 0.9).
(f) Start-up: wall of `flowc check` on an example spec and of `flowc run` of a pipeline whose replies are
    cached (medians of 5 subprocess runs), and whether each imported litellm. Goals: <= 0.5 s, <= 1.5 s.
(h) HTTP clients for the native transport: aiohttp vs httpx's AsyncClient, sequential and at
    concurrency 16 (why the native transport uses aiohttp).

Writes benchmarks/results/runtime.json (sections not run keep their previous figures). Never used as a
timed test: the figures depend on the machine and its load (the load average is recorded).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import _runtime_systems as rs  # noqa: E402
from _common import package_version, write_results  # noqa: E402
from _runtime_sections import section_b, section_c, section_d, section_e, section_f, section_h  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "runtime.json"


async def measure(systems: dict[str, rs.Run], runs: int, rounds: int, calls: int) -> dict[str, Any]:
    """Median wall and mean CPU per call of each system, runs interleaved in a rotating order."""
    for fn in systems.values():  # warm up: imports, connection pools, lazy setup
        for _ in range(10):
            await fn()
    names = list(systems)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for i in range(runs):
            k = (i + r) % len(names)
            for name in names[k:] + names[:k]:
                c0, t0 = time.process_time(), time.perf_counter()
                await systems[name]()
                wall[name].append((time.perf_counter() - t0) * 1000 / calls)
                cpu[name].append((time.process_time() - c0) * 1000 / calls)
    out = {}
    for name in names:
        ts = sorted(wall[name])
        out[name] = {
            "median_ms_per_call": statistics.median(ts),
            "p90_ms_per_call": ts[int(0.9 * (len(ts) - 1))],
            "mean_cpu_ms_per_call": statistics.fmean(cpu[name]),
            "pipeline_runs": len(ts),
        }
    return out


def section_a(url: str, args: argparse.Namespace, notes: list[str]) -> dict[str, Any]:
    calls = 4
    with tempfile.TemporaryDirectory() as tmp:

        async def go() -> dict[str, Any]:
            flowc, messages = await rs.flowc_systems(url, Path(tmp), calls)
            systems = {**flowc, **rs.dspy_systems(url, calls, notes), **rs.raw_systems(url, messages)}
            return await measure(systems, args.runs, args.rounds, calls)

        per_call = asyncio.run(go())
        own = asyncio.run(own_work(url, args, Path(tmp)))
    native = per_call["flowc (native transport)"]
    out: dict[str, Any] = {"per_call_ms": per_call, "own_work_us": own}
    dspy = next((v for k, v in per_call.items() if "default engine" in k), None)
    if dspy is not None:
        out["flowc / DSPy default engine (wall)"] = native["median_ms_per_call"] / dspy["median_ms_per_call"]
        out["flowc / DSPy default engine (CPU)"] = native["mean_cpu_ms_per_call"] / dspy["mean_cpu_ms_per_call"]
    raw = per_call["litellm.acompletion"]
    via = per_call["flowc (transport: litellm)"]
    out["litellm path overhead over raw litellm (ms, wall)"] = via["median_ms_per_call"] - raw["median_ms_per_call"]
    out["litellm path overhead over raw litellm (ms, CPU)"] = via["mean_cpu_ms_per_call"] - raw["mean_cpu_ms_per_call"]
    return out


async def own_work(url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """flowc's own work per call with the HTTP call answered in process (no I/O), and the run store's share."""
    import cProfile
    import io
    import pstats

    calls = 4
    flowc, _ = await rs.flowc_systems(url, tmp / "own", calls)

    async def nothing() -> None:
        for _ in range(calls):
            await asyncio.sleep(0)

    with rs.stubbed_native(), rs.stubbed_litellm():
        systems = {"baseline (4 awaits)": nothing, **flowc}
        results = await measure(systems, args.runs * 2, args.rounds, calls)
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(args.runs):
            await flowc["flowc (native transport)"]()
        prof.disable()
    path = Path(tempfile.gettempdir()) / "flowc_bench_runtime_executor.prof"
    prof.dump_stats(path)
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
    base = results.pop("baseline (4 awaits)")
    out: dict[str, Any] = {
        name: {
            "wall_us_per_call": (r["median_ms_per_call"] - base["median_ms_per_call"]) * 1000,
            "cpu_us_per_call": (r["mean_cpu_ms_per_call"] - base["mean_cpu_ms_per_call"]) * 1000,
        }
        for name, r in results.items()
    }
    out["run store (us per call, wall)"] = (
        out["flowc (native, run store on)"]["wall_us_per_call"] - out["flowc (native transport)"]["wall_us_per_call"]
    )
    out["profile_top_tottime"] = [line for line in buf.getvalue().splitlines() if line.strip()][:30]
    out["profile_file"] = str(path)
    return out


# -- report --------------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("meets goal" if ok else "MISSES goal")


def report_a(a: dict[str, Any], args: argparse.Namespace) -> None:
    print(f"(a) Per LM call, sequential: 4-node chain, zero-latency server ({args.rounds} rounds x {args.runs} runs)")
    print(f"    {'system':40} {'wall med':>9} {'p90':>8} {'CPU mean':>9}   (ms per call)")
    for name, r in a["per_call_ms"].items():
        print(
            f"    {name:40} {r['median_ms_per_call']:9.3f} {r['p90_ms_per_call']:8.3f} {r['mean_cpu_ms_per_call']:9.3f}"
        )
    if "flowc / DSPy default engine (wall)" in a:
        w, c = a["flowc / DSPy default engine (wall)"], a["flowc / DSPy default engine (CPU)"]
        print(f"    flowc / DSPy's default engine: {w:.2f}x wall, {c:.2f}x CPU -> {verdict(w <= 0.8)} (<= 0.8x)")
    print(
        f"    flowc's litellm path over raw litellm: {a['litellm path overhead over raw litellm (ms, wall)']:+.3f} ms "
        f"wall, {a['litellm path overhead over raw litellm (ms, CPU)']:+.3f} ms CPU (goal: no worse than before)"
    )
    own = a["own_work_us"]
    print("    Own work per call, HTTP answered in process (minus 4 bare awaits):")
    for name in ("flowc (native transport)", "flowc (native, run store on)", "flowc (transport: litellm)"):
        r = own[name]
        print(f"      {name:38} {r['wall_us_per_call']:7.0f} us wall {r['cpu_us_per_call']:7.0f} us CPU")
    mine = own["flowc (native transport)"]["wall_us_per_call"]
    store = own["run store (us per call, wall)"]
    print(
        f"      own work {mine:.0f} us -> {verdict(mine <= 150)} (<= 150 us); run store +{store:.0f} us "
        f"-> {verdict(store <= 100)} (<= 100 us)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sections", default="a,b,c,d,f,h", help="which sections to run (comma-separated; e is opt-in)")
    ap.add_argument("--runs", type=int, default=150, help="(a) pipeline runs per system per round")
    ap.add_argument("--rounds", type=int, default=3, help="(a) rounds")
    ap.add_argument("--fanout-runs", type=int, default=10, help="(b) runs")
    ap.add_argument("--batch", type=int, default=200, help="(c, d) batch size")
    ap.add_argument("--concurrency", type=int, default=16, help="(c, d) concurrency")
    ap.add_argument("--local-model", default="local/smollm2", help="(e) embedded model")
    ap.add_argument("--max-tokens", type=int, default=64, help="(e) max_tokens")
    ap.add_argument("--local-prompts", type=int, default=8, help="(e) prompts (at most 8)")
    ap.add_argument("--local-rounds", type=int, default=1, help="(e) rounds over the prompts")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if args.serve:
        rs.serve()
        return
    rs.env_for_dspy()
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    notes: list[str] = []
    report: dict[str, Any] = {}
    previous = json.loads(args.out.read_text()) if args.out.exists() else {}
    started = time.time()
    if sections & {"a", "b", "c", "d", "f"}:
        with rs.fake_server(Path(__file__)) as url:
            if "a" in sections:
                report["a_per_call"] = section_a(url, args, notes)
            if "b" in sections:
                report["b_fanout"] = section_b(url, args, notes)
            if "c" in sections:
                report["c_batch"] = section_c(url, args, notes)
            if "d" in sections:
                report["d_cached_rerun"] = section_d(url, args)
            if "f" in sections:
                report["f_startup"] = section_f(url)
    if "e" in sections:
        report["e_embedded_throughput"] = section_e(args)
    if "h" in sections:
        with rs.fake_server(Path(__file__)) as url:
            report["h_http_clients"] = section_h(url)

    print()
    if "a_per_call" in report:
        report_a(report["a_per_call"], args)
    if "b_fanout" in report:
        b = report["b_fanout"]
        rows = ", ".join(f"{k} {v['ratio']:.3f}x" for k, v in b["systems"].items())
        flowc = b["systems"]["flowc"]["ratio"]
        print(
            f"(b) Fan-out 8 x 100 ms + join vs critical path 0.2 s: {rows} -> flowc {verdict(flowc <= 1.08)} (<= 1.08x)"
        )
    if "c_batch" in report:
        c = report["c_batch"]
        rows = ", ".join(f"{k} {v['ratio']:.3f}x ({v['wall_s']:.2f} s)" for k, v in c["latency_100ms"].items())
        flowc = c["latency_100ms"]["flowc run_batch"]["ratio"]
        print(
            f"(c) Batch {c['inputs']} x 3 calls @ {c['concurrency']}, 100 ms/call vs ideal {c['ideal_s']:.2f} s: "
            f"{rows} -> flowc {verdict(flowc <= 1.10)} (<= 1.10x)"
        )
        z = c["latency_0"]
        rows = ", ".join(f"{k} {v['pipelines_per_s']:.0f}/s" for k, v in z.items())
        dspy = next((v["pipelines_per_s"] for k, v in z.items() if k.startswith("DSPy")), None)
        ok = None if dspy is None else z["flowc run_batch"]["pipelines_per_s"] >= dspy
        print(f"    at zero latency: {rows} -> {verdict(ok)} (flowc >= DSPy .batch)")
    if "d_cached_rerun" in report:
        d = report["d_cached_rerun"]
        print(
            f"(d) Cached rerun: pass 1 {d['first_pass']['lm_calls_to_model']} calls in "
            f"{d['first_pass']['wall_s']:.3f} s; "
            f"pass 2 {d['second_pass_lm_calls']} calls in {d['second_pass']['wall_s']:.3f} s "
            f"-> {verdict(d['second_pass_lm_calls'] == 0)} (0)"
        )
    if "e_embedded_throughput" in report:
        e = report["e_embedded_throughput"]
        print(
            f"(e) {e['model']}: direct {e['direct_tokens_per_s']:.1f} tok/s, "
            f"flowc {e['flowc_tokens_per_s']:.1f} tok/s: "
            f"{e['ratio']:.3f} -> {verdict(e['ratio'] >= 0.9)} (>= 0.9)"
        )
    if "f_startup" in report:
        f = report["f_startup"]
        print(
            f"(f) Start-up: flowc check {f['check_s']:.2f} s -> {verdict(f['check_s'] <= 0.5)} (<= 0.5 s); "
            f"flowc run (cached) {f['run_cached_s']:.2f} s -> {verdict(f['run_cached_s'] <= 1.5)} (<= 1.5 s); "
            f"litellm imported: check {f['check_imports_litellm']}, run {f['run_imports_litellm']}"
        )
    if "h_http_clients" in report:
        h = report["h_http_clients"]
        for name, r in h.items():
            print(
                f"(h) {name:8} sequential {r['sequential_ms']:.3f} ms/call ({r['sequential_cpu_ms']:.3f} ms CPU); "
                f"concurrency 16: {r['c16_per_s']:.0f} req/s ({r['c16_cpu_ms']:.3f} ms CPU/req)"
            )
    for n in notes:
        print("note:", n)

    merged = dict(previous.get("sections", {}))
    merged.update(report)
    write_results(
        args.out,
        {
            "benchmark": "runtime",
            "sections": merged,
            "last_run": {
                "sections": sorted(sections),
                "args": {k: v for k, v in vars(args).items() if k != "out"} | {"out": str(args.out)},
                "seconds": time.time() - started,
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            },
            "versions": {p: package_version(p) for p in ("litellm", "aiohttp", "httpx", "dspy", "xllamacpp")},
            "notes": notes,
        },
    )


if __name__ == "__main__":
    main()
