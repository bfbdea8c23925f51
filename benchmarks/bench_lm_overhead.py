"""Per-call overhead of model clients against a zero-latency OpenAI-compatible server on 127.0.0.1.

    .venv/bin/python benchmarks/bench_lm_overhead.py [--calls 300] [--rounds 5]

The fake server (flowc.testing.fake_server) runs in its own process, so only the client's work
is on the measured process. Each client makes the same non-streaming chat call (one system and
one user message, temperature 0, max_tokens 16). Calls are interleaved one by one (each client
once per step, in a rotating order), so drift in the machine's load (other processes share its
2 cores) hits all of them alike. Reported: the median
and p90 of single-call wall times in ms, pooled over rounds, and the median of per-round
medians (robust to a round that was disturbed).

Clients: a plain `httpx.AsyncClient` POST (the floor), raw `litellm.acompletion`, flowc's
`ModelClient.complete` on its litellm transport ("flowc ModelClient", the row compared with raw
litellm) and on its native transport, and DSPy's `LM.acall` with its default engine and with its litellm
engine (skipped with a note when dspy is not installed; caching off). Writes
`benchmarks/results/lm_overhead.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("DSPY_CACHEDIR", str(ROOT / ".cache" / "dspy-bench"))

import warnings  # noqa: E402

import httpx  # noqa: E402
import litellm  # noqa: E402
from _common import package_version, write_results  # noqa: E402

from flowc.runtime.client import ModelClient  # noqa: E402
from flowc.runtime.lm import LMRequest, chat  # noqa: E402
from flowc.runtime.policy import ModelPolicy  # noqa: E402

SYSTEM, USER = "Answer briefly.", "What is the capital of France?"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
KEY = "no-key-needed"

Call = Callable[[], Awaitable[Any]]


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowc.testing.fake_server"], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        proc.terminate()
        raise SystemExit(f"fake server did not start: {url!r}")
    return proc, url


def make_clients(url: str) -> tuple[dict[str, Call], list[str]]:
    notes: list[str] = []
    http = httpx.AsyncClient(base_url=url, headers={"authorization": f"Bearer {KEY}"})
    body = {"model": "fake", "messages": MESSAGES, "temperature": 0.0, "max_tokens": 16}

    async def plain_httpx() -> Any:
        r = await http.post("/chat/completions", json=body)
        r.raise_for_status()
        return r.json()["choices"][0]["message"]["content"]

    async def raw_litellm() -> Any:
        r = await litellm.acompletion(
            model="openai/fake",
            messages=MESSAGES,
            api_base=url,
            api_key=KEY,
            temperature=0.0,
            max_tokens=16,
            max_retries=0,
        )
        return r.choices[0].message.content

    flowc_client = ModelClient({"openai/fake": ModelPolicy(api_base=url, transport="litellm")})
    native_client = ModelClient({"openai/fake": ModelPolicy(api_base=url)})
    request = LMRequest(model="openai/fake", messages=chat(SYSTEM, USER), max_tokens=16)

    async def flowc_lm() -> Any:
        return (await flowc_client.complete(request)).text

    async def flowc_native() -> Any:
        return (await native_client.complete(request)).text

    clients: dict[str, Call] = {
        "httpx (plain HTTP)": plain_httpx,
        "litellm.acompletion": raw_litellm,
        "flowc ModelClient": flowc_lm,
        "flowc ModelClient (native transport)": flowc_native,
    }
    try:
        import dspy
    except ImportError as e:
        notes.append(f"DSPy skipped: cannot import dspy ({e}); pip install dspy to include it")
        return clients, notes

    for engine in ("auto", "litellm"):
        try:
            lm = dspy.LM(
                "openai/fake",
                api_base=url,
                api_key=KEY,
                cache=False,
                temperature=0.0,
                max_tokens=16,
                num_retries=0,
                engine=engine,
            )
        except Exception as e:  # an older DSPy without engines: one client only
            if engine == "auto":
                lm = dspy.LM(
                    "openai/fake", api_base=url, api_key=KEY, cache=False, temperature=0.0, max_tokens=16, num_retries=0
                )
            else:
                notes.append(f"DSPy engine={engine} skipped: {e}")
                continue

        async def dspy_call(lm: Any = lm) -> Any:
            with warnings.catch_warnings():  # messages= is deprecated in 3.4 but still the chat API
                warnings.simplefilter("ignore", DeprecationWarning)
                return (await lm.acall(messages=MESSAGES))[0]

        clients[f"DSPy {dspy.__version__} LM.acall (engine={engine})"] = dspy_call
    return clients, notes


async def measure(clients: dict[str, Call], calls: int, rounds: int) -> dict[str, dict[str, float]]:
    for fn in clients.values():  # warm up: imports, connection pools, lazy setup
        for _ in range(20):
            await fn()
    names = list(clients)
    samples: dict[str, list[float]] = {name: [] for name in clients}
    cpu: dict[str, list[float]] = {name: [] for name in clients}
    round_medians: dict[str, list[float]] = {name: [] for name in clients}
    for r in range(rounds):
        times: dict[str, list[float]] = {name: [] for name in clients}
        for i in range(calls):
            # One call of each client in turn, in a rotating order: load drift and any
            # position effect fall on every client alike.
            k = (i + r) % len(names)
            for name in names[k:] + names[:k]:
                c0 = time.process_time()
                t0 = time.perf_counter()
                await clients[name]()
                times[name].append((time.perf_counter() - t0) * 1000)
                cpu[name].append((time.process_time() - c0) * 1000)
        for name, ts in times.items():
            samples[name].extend(ts)
            round_medians[name].append(statistics.median(ts))
    out = {}
    for name, ts in samples.items():
        ts.sort()
        out[name] = {
            "median_ms": statistics.median(ts),
            "p90_ms": ts[int(0.9 * (len(ts) - 1))],
            "median_of_round_medians_ms": statistics.median(round_medians[name]),
            # CPU time of this process per call: the client's own work, far less disturbed than
            # wall time when other processes compete for the cores.
            "cpu_median_ms": statistics.median(cpu[name]),
            "calls": len(ts),
        }
    return out


async def flowc_own_work(calls: int) -> dict[str, float]:
    """flowc's own per-call work: `ModelClient.complete` with `litellm.acompletion` replaced by a
    coroutine returning a prebuilt response, minus the same coroutine called directly."""
    prebuilt = litellm.ModelResponse(
        model="fake",
        choices=[{"index": 0, "message": {"role": "assistant", "content": "Paris"}, "finish_reason": "stop"}],
        usage={"prompt_tokens": 12, "completion_tokens": 1, "total_tokens": 13},
    )

    async def stub(**kwargs: Any) -> Any:
        return prebuilt

    client = ModelClient({"openai/fake": ModelPolicy(api_base="http://127.0.0.1:9/v1", transport="litellm")})
    request = LMRequest(model="openai/fake", messages=chat(SYSTEM, USER), max_tokens=16)
    real = litellm.acompletion
    litellm.acompletion = stub
    try:
        samples_client: list[float] = []
        samples_stub: list[float] = []
        for _ in range(200):
            await client.complete(request)
        for _ in range(calls):
            t0 = time.perf_counter()
            await client.complete(request)
            t1 = time.perf_counter()
            await stub()
            t2 = time.perf_counter()
            samples_client.append((t1 - t0) * 1e6)
            samples_stub.append((t2 - t1) * 1e6)
    finally:
        litellm.acompletion = real
    c, st = statistics.median(samples_client), statistics.median(samples_stub)
    return {"complete_us": c, "stub_us": st, "own_work_us": c - st}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=200, help="calls per client per round")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "lm_overhead.json")
    args = ap.parse_args()

    proc, url = start_server()
    try:
        clients, notes = make_clients(url)
        results = asyncio.run(measure(clients, args.calls, args.rounds))
        own = asyncio.run(flowc_own_work(args.calls * args.rounds))
    finally:
        proc.terminate()
        proc.wait(10)

    base = results["httpx (plain HTTP)"]["median_ms"]
    raw = results["litellm.acompletion"]["median_ms"]
    print(
        f"\nPer-call latency against a zero-latency loopback server "
        f"({args.rounds} rounds x {args.calls} calls, interleaved)"
    )
    print(f"{'client':48} {'median ms':>10} {'p90 ms':>8} {'round-med':>10} {'over httpx':>11} {'cpu ms':>7}")
    for name, r in results.items():
        print(
            f"{name:48} {r['median_ms']:10.3f} {r['p90_ms']:8.3f} {r['median_of_round_medians_ms']:10.3f} "
            f"{r['median_ms'] - base:+11.3f} {r['cpu_median_ms']:7.3f}"
        )
    flowc = results["flowc ModelClient"]["median_ms"]
    cpu_flowc = results["flowc ModelClient"]["cpu_median_ms"]
    cpu_raw = results["litellm.acompletion"]["cpu_median_ms"]
    print(
        f"\nflowc ModelClient vs raw litellm.acompletion: {flowc - raw:+.3f} ms wall, "
        f"{cpu_flowc - cpu_raw:+.3f} ms CPU per call ({flowc / raw:.2f}x wall)"
    )
    print(f"flowc's own work per call (litellm stubbed out): {own['own_work_us']:.1f} us")
    for n in notes:
        print("note:", n)

    write_results(
        args.out,
        {
            "benchmark": "lm_overhead",
            "server": "flowc.testing.fake_server (zero latency, separate process, 127.0.0.1)",
            "calls_per_round": args.calls,
            "rounds": args.rounds,
            "versions": {
                "litellm": package_version("litellm"),
                "httpx": httpx.__version__,
                "dspy": package_version("dspy"),
            },
            "results_ms": results,
            "flowc_minus_litellm_ms": flowc - raw,
            "flowc_minus_litellm_cpu_ms": cpu_flowc - cpu_raw,
            "load_average_1min": os.getloadavg()[0],
            "flowc_own_work_us": own,
            "notes": notes,
        },
    )


if __name__ == "__main__":
    main()
