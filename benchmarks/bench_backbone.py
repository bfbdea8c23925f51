"""Benchmark of the jax backbone (issue 6): load, forward, training step, decode, export, and the
fine-tune demonstration served through llama.cpp.

Prints its figures and writes benchmarks/results/backbone.json.

    python benchmarks/bench_backbone.py            # everything (~10 min on 2 cores)
    python benchmarks/bench_backbone.py --quick    # speed figures only, no fine-tune demo
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "backbone"))  # the llama.cpp oracle and the demo task

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tagged_task as task  # noqa: E402
from _common import machine, write_results  # noqa: E402
from llama_oracle import LlamaOracle  # noqa: E402

from flowc.backbone.backbone import Backbone  # noqa: E402
from flowc.backbone.batching import chat_example, make_batch  # noqa: E402
from flowc.backbone.lora import LoraConfig  # noqa: E402
from flowc.backbone.model import hidden_states  # noqa: E402
from flowc.backbone.train import LoraTrainer  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "backbone.json"


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (jax, numpy and llama.cpp together)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any], repeats: int = 3) -> tuple[float, float]:
    """(first call seconds, including compilation; median seconds of `repeats` warm calls)."""
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        runs.append(time.perf_counter() - t0)
    return first, statistics.median(runs)


def bench_speed(bb: Backbone, results: dict[str, Any], tmp: Path) -> None:
    cfg = bb.config
    rng = np.random.RandomState(0)
    fwd = jax.jit(lambda p, t: hidden_states(p, cfg, t))
    for b, t in ((1, 128), (4, 128), (1, 512)):
        tokens = jax.numpy.asarray(rng.randint(0, cfg.vocab_size, (b, t)))
        first, warm = timed(lambda tokens=tokens: fwd(bb.params, tokens))
        key = f"forward_b{b}_t{t}"
        results[key] = {"tokens_per_s": b * t / warm, "seconds": warm, "first_call_s": first}
        print(f"forward (prefill) B={b} T={t}: {b * t / warm:7.1f} tok/s  ({warm:.2f} s; first call {first:.1f} s)")
    results["peak_rss_mib_after_forward"] = peak_rss_mib()

    examples = [chat_example(bb.tokenizer, task.messages(r), task.target(r)) for r in task.load("train")]
    batch = make_batch(examples[:8], pad_id=bb.end_of_turn_id, length=112, n_targets=16)
    for name, kw in (
        ("train_step", {}),
        ("train_step_remat", {"remat": True}),
        ("train_step_microbatch2", {"micro_batches": 2}),
    ):
        trainer = LoraTrainer.create(bb, LoraConfig(rank=8, alpha=16.0, targets=("q", "v")), **kw)
        first, warm = timed(lambda trainer=trainer: trainer.sft_step(batch))
        tok = batch.tokens.size
        results[name] = {"tokens_per_s": tok / warm, "seconds": warm, "first_call_s": first, "batch": [8, 112]}
        results[f"peak_rss_mib_after_{name}"] = peak_rss_mib()
        print(f"{name:24s} B=8 T=112: {tok / warm:7.1f} tok/s  ({warm:.2f} s/step; first {first:.1f} s)")

    prompt = bb.chat_prompt_ids(task.messages(task.load("test")[0]))
    bb.generate(prompt, max_new_tokens=64)  # compile for this prompt and cache size
    t0 = time.perf_counter()
    out = bb.generate(prompt, max_new_tokens=64)[0]
    t1 = time.perf_counter() - t0
    results["decode"] = {"tokens": len(out.ids), "seconds": t1, "tokens_per_s": len(out.ids) / t1}
    print(f"jax greedy decode: {len(out.ids) / t1:7.1f} tok/s (prefill {len(prompt)} + {len(out.ids)} tokens)")

    trainer = LoraTrainer.create(bb, LoraConfig())
    trainer.sft_step(batch)
    for kind, kw in (("export_merged_s", {}), ("export_merged_f16_s", {"untouched": "f16"})):
        t0 = time.perf_counter()
        path = trainer.export(tmp / f"{kind}.gguf", **kw)
        results[kind] = time.perf_counter() - t0
        results[kind.replace("_s", "_mib")] = path.stat().st_size / 2**20
        print(f"{kind}: {results[kind]:.1f} s ({path.stat().st_size / 2**20:.0f} MiB)")
        path.unlink()
    t0 = time.perf_counter()
    path = trainer.export(tmp / "adapter.gguf", kind="adapter")
    results["export_adapter_s"] = time.perf_counter() - t0
    path.unlink()
    t0 = time.perf_counter()
    path = trainer.save(tmp / "adapter.safetensors")
    results["save_adapter_s"] = time.perf_counter() - t0
    results["adapter_mib"] = path.stat().st_size / 2**20
    print(f"save adapter: {results['save_adapter_s']:.2f} s ({results['adapter_mib']:.2f} MiB)")


def evaluate_served(path: Path, rows: list[dict[str, str]]) -> dict[str, Any]:
    """Format-validity and accuracy of a GGUF file served by llama.cpp (greedy, 24 tokens)."""
    oracle = LlamaOracle(path)
    t0 = time.perf_counter()
    try:
        replies = [oracle.chat(task.messages(r), max_tokens=24) for r in rows]
    finally:
        oracle.close()
    scores = [task.score(rep, r["answer"]) for rep, r in zip(replies, rows)]
    return {
        "format_valid": sum(v for v, _ in scores) / len(rows),
        "accuracy": sum(c for _, c in scores) / len(rows),
        "n": len(rows),
        "seconds": time.perf_counter() - t0,
        "examples": [{"q": r["question"], "answer": r["answer"], "reply": rep} for r, rep in zip(rows[:5], replies)],
    }


def bench_demo(bb: Backbone, results: dict[str, Any], tmp: Path, steps: int) -> None:
    train_rows, test_rows = task.load("train"), task.load("test")
    before = evaluate_served(bb.file.path, test_rows)
    print(f"before: format-valid {before['format_valid']:.0%}, accuracy {before['accuracy']:.0%} (n={before['n']})")
    examples = [chat_example(bb.tokenizer, task.messages(r), task.target(r)) for r in train_rows]
    trainer = LoraTrainer.create(bb, LoraConfig(rank=8, alpha=16.0, targets=("q", "v")), learning_rate=2e-3)
    rng = np.random.RandomState(0)
    losses = []
    t0 = time.perf_counter()
    for step in range(steps):
        idx = rng.choice(len(examples), 8, replace=False)
        batch = make_batch([examples[i] for i in idx], pad_id=bb.end_of_turn_id, length=112, n_targets=16)
        losses.append(trainer.sft_step(batch))
        print(f"  step {step + 1:3d}/{steps}: loss {losses[-1]:.4f}", flush=True)
    train_s = time.perf_counter() - t0
    exported = trainer.export(tmp / "tagged-qa.gguf")
    after = evaluate_served(exported, test_rows)
    print(f"after:  format-valid {after['format_valid']:.0%}, accuracy {after['accuracy']:.0%} (n={after['n']})")
    results["demo"] = {
        "task": "tagged extractive QA: reply exactly <answer>span</answer> (tests/backbone/fixtures/tagged_qa.jsonl)",
        "train_examples": len(train_rows),
        "lora": trainer.lora_cfg.to_dict(),
        "steps": steps,
        "batch": 8,
        "learning_rate": 2e-3,
        "train_seconds": train_s,
        "losses": losses,
        "before": before,
        "after": after,
        "served_file_mib": exported.stat().st_size / 2**20,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="speed figures only (no fine-tune demo)")
    ap.add_argument("--steps", type=int, default=16, help="SFT steps of the demo (batch 8)")
    ap.add_argument("--tmp", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "flowc-bench-backbone")
    args = ap.parse_args()
    args.tmp.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": {
            **machine(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
            "load_average_start": os.getloadavg(),
        },
    }
    t0 = time.perf_counter()
    bb = Backbone.load("smollm2")
    results["load_s"] = time.perf_counter() - t0
    results["peak_rss_mib_after_load"] = peak_rss_mib()
    print(f"load SmolLM2-135M (dequantize GGUF -> jax float32): {results['load_s']:.1f} s")
    bench_speed(bb, results, args.tmp)
    if not args.quick:
        bench_demo(bb, results, args.tmp, args.steps)
    elif OUT.exists():  # keep the last full run's demonstration beside the new speed figures
        previous = json.loads(OUT.read_text())
        if "demo" in previous:
            results["demo"] = {**previous["demo"], "from_earlier_run": True}
    results["machine"]["load_average_end"] = os.getloadavg()
    results["peak_rss_mib"] = peak_rss_mib()
    print(f"peak RSS: {results['peak_rss_mib']:.0f} MiB")
    write_results(OUT, results)


if __name__ == "__main__":
    main()
