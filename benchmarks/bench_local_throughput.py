"""Tokens per second of the embedded model: xllamacpp called directly vs flowc's ModelClient.

    .venv/bin/python benchmarks/bench_local_throughput.py [--model local/smollm2] [--max-tokens 64] [--rounds 2]

Both sides use the same loaded model (one `xllamacpp.Server` in this process), the same prompts,
greedy decoding and the same max_tokens, so they generate the same tokens. The direct side calls
`Server.handle_chat_completions(dict)` on the main thread; the flowc side awaits
`ModelClient.complete` with `local/...` (the embedded transport: a worker thread, response
checks). Prompts alternate between the two sides one by one, in a rotating order, so load
from other processes on the machine hits both alike. Reported: completion tokens / wall seconds
per side, and the ratio (goal >= 0.9). Writes `benchmarks/results/local_throughput.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import write_results  # noqa: E402

from flowc.runtime import local_provider  # noqa: E402
from flowc.runtime.client import ModelClient  # noqa: E402
from flowc.runtime.lm import LMRequest, chat  # noqa: E402

SYSTEM = "You are a helpful assistant."
PROMPTS = [
    "Write a short story about a cat who learns to sail.",
    "Explain why the sky is blue to a ten-year-old.",
    "List some tips for learning a new language.",
    "Describe the city of Paris in a few sentences.",
    "What are the benefits of regular exercise?",
    "Write a poem about the ocean at night.",
    "How does a bicycle stay upright while moving?",
    "Give a recipe for a simple tomato soup.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="local/smollm2")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=len(PROMPTS), help=f"how many of the {len(PROMPTS)} prompts")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "local_throughput.json")
    args = ap.parse_args()
    prompts = PROMPTS[: args.prompts]

    t0 = time.perf_counter()
    loaded = local_provider.load(args.model)
    load_s = time.perf_counter() - t0
    client = ModelClient()

    def direct(prompt: str) -> tuple[int, float, str]:
        body = {
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
            "max_tokens": args.max_tokens,
            "temperature": 0.0,
        }
        t = time.perf_counter()
        out: dict[str, Any] = loaded.server.handle_chat_completions(body)
        dt = time.perf_counter() - t
        return int(out["usage"]["completion_tokens"]), dt, out["choices"][0]["message"]["content"]

    async def via_flowc(prompt: str) -> tuple[int, float, str]:
        req = LMRequest(model=args.model, messages=chat(SYSTEM, prompt), max_tokens=args.max_tokens)
        t = time.perf_counter()
        r = await client.complete(req)
        dt = time.perf_counter() - t
        return r.completion_tokens, dt, r.text

    async def run() -> dict[str, dict[str, float]]:
        direct(prompts[0])  # warm up both paths (litellm's lazy imports, the thread pool)
        await via_flowc(prompts[0])
        totals = {"direct": [0, 0.0], "flowc": [0, 0.0]}
        same = 0
        paired_ms: list[float] = []  # flowc minus direct, same prompt, back to back
        for r in range(args.rounds):
            for i, prompt in enumerate(prompts):
                order = ("direct", "flowc") if (i + r) % 2 == 0 else ("flowc", "direct")
                texts, times = {}, {}
                for side in order:
                    tokens, dt, text = direct(prompt) if side == "direct" else await via_flowc(prompt)
                    totals[side][0] += tokens
                    totals[side][1] += dt
                    texts[side], times[side] = text, dt
                same += texts["direct"] == texts["flowc"]
                paired_ms.append((times["flowc"] - times["direct"]) * 1000)
        out = {side: {"completion_tokens": t, "seconds": s, "tokens_per_s": t / s} for side, (t, s) in totals.items()}
        out["identical_outputs"] = {"count": same, "of": args.rounds * len(prompts)}
        out["paired_overhead_ms"] = {"median": statistics.median(paired_ms), "min": min(paired_ms)}
        return out

    results = asyncio.run(run())
    ratio = results["flowc"]["tokens_per_s"] / results["direct"]["tokens_per_s"]
    print(
        f"\n{args.model}: {len(prompts)} prompts x {args.rounds} rounds, max_tokens={args.max_tokens}, greedy "
        f"(model load {load_s:.2f} s)"
    )
    print(f"{'path':34} {'tokens':>7} {'seconds':>8} {'tok/s':>7}")
    for side, label in (("direct", "xllamacpp handle_chat_completions"), ("flowc", "flowc ModelClient")):
        r = results[side]
        print(f"{label:34} {r['completion_tokens']:7.0f} {r['seconds']:8.2f} {r['tokens_per_s']:7.1f}")
    print(
        f"ratio flowc/direct: {ratio:.3f} (goal >= 0.9); identical outputs: "
        f"{results['identical_outputs']['count']:.0f}/{results['identical_outputs']['of']:.0f}"
    )
    paired = results["paired_overhead_ms"]
    print(
        f"per-call time flowc minus direct, same prompt back to back: median {paired['median']:+.1f} ms, "
        f"min {paired['min']:+.1f} ms"
    )
    write_results(
        args.out,
        {
            "benchmark": "local_throughput",
            "model": args.model,
            "gguf": str(loaded.path),
            "max_tokens": args.max_tokens,
            "rounds": args.rounds,
            "prompts": len(prompts),
            "load_average_1min": os.getloadavg()[0],
            "model_load_s": load_s,
            "results": results,
            "ratio_flowc_over_direct": ratio,
        },
    )


if __name__ == "__main__":
    main()
