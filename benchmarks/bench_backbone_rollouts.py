"""Rollout decoding on this CPU: jax (step by step, and the compiled batched loop) against llama.cpp.

The question it answers: where should JADE's rollouts (many different prompts, several samples
each, with the current adapter, log-probs needed for the policy step) be decoded on a CPU? It
decodes the same chat prompts (SmolLM2-135M-Instruct, the tagged-QA task's held-out rows) with

- jax, step by step (`generate`: one Python round trip per token), one prompt after another;
- jax, the compiled loop (`decode_batch`): all prompts in one batch, and a group of `--group`
  rows per prompt in one batch (a GRPO-sized rollout; each prompt prefilled once, `n=`);
- llama.cpp (xllamacpp on the shipped Q4_1 file, as the runtime serves it), one request after
  another (prompt cache on, as the server keeps it), plain and with the LoRA-adapter GGUF loaded,
  as the runtime would serve a trained adapter;

and times what the llama.cpp path adds per policy update: exporting the adapter, restarting the
server with it, and re-scoring the rollouts in jax (the policy step needs the jax policy's
log-probs; llama.cpp's come from the quantized model).

    python benchmarks/bench_backbone_rollouts.py [--prompts 8] [--group 4] [--new-tokens 32] [--threads 1]
    python benchmarks/bench_backbone_rollouts.py --ignore-stop --new-tokens 64   # decode-bound

Every path uses `--threads` threads (jax through XLA_FLAGS, set before jax loads). Each figure is
given per second of wall time and per second of this process's CPU time: on a shared machine the
CPU-time figure (work per token) is the one that survives the other jobs' load, and with one thread
no path wastes CPU spinning at barriers. Paths decode greedily and stop at the end-of-turn token
(SmolLM2's greedy replies here are short, so prefill weighs heavily) or, with --ignore-stop, run
every row to --new-tokens; rates count generated tokens and include prefill; each path runs once
before it is timed.
Prints its figures and writes benchmarks/results/backbone_rollouts.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "backbone"))  # the llama.cpp oracle and the task's prompts


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--prompts", type=int, default=8, help="different prompts")
    ap.add_argument("--group", type=int, default=4, help="rows per prompt in the group batch")
    ap.add_argument("--new-tokens", type=int, default=32, help="most tokens generated per row")
    ap.add_argument("--threads", type=int, default=1, help="threads for jax and for llama.cpp")
    ap.add_argument("--ignore-stop", action="store_true", help="every row runs to --new-tokens (decode-bound)")
    ap.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results/backbone_rollouts[_nostop].json"
    )
    args = ap.parse_args()
    name = "backbone_rollouts_nostop.json" if args.ignore_stop else "backbone_rollouts.json"
    args.out = args.out or ROOT / "benchmarks" / "results" / name
    return args


ARGS = _args()
if ARGS.threads == 1:  # before jax loads: XLA reads its flags once
    os.environ["XLA_FLAGS"] = " ".join(
        [os.environ.get("XLA_FLAGS", ""), "--xla_cpu_multi_thread_eigen=false", "intra_op_parallelism_threads=1"]
    ).strip()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import tagged_task as task  # noqa: E402
from _common import machine, write_results  # noqa: E402
from llama_oracle import LlamaOracle  # noqa: E402

from flowc.backbone.backbone import Backbone  # noqa: E402
from flowc.backbone.batching import Example, make_batch  # noqa: E402
from flowc.backbone.decode import decode_batch  # noqa: E402
from flowc.backbone.generate import Sample, generate  # noqa: E402
from flowc.backbone.lora import LoraConfig  # noqa: E402
from flowc.backbone.train import LoraTrainer  # noqa: E402


def timed(fn: Callable[[], int]) -> dict[str, float]:
    """Run `fn` (it returns the number of tokens it generated): wall and CPU seconds, and rates."""
    fn()  # warm-up: compiles what jax needs, fills llama.cpp's prompt cache
    w0, c0 = time.perf_counter(), time.process_time()
    tokens = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    rates = {"tokens_per_s": tokens / wall, "tokens_per_cpu_s": tokens / cpu}
    return {"tokens": tokens, "wall_s": wall, "cpu_s": cpu, **rates}


def _count(samples: list[Sample]) -> int:
    return sum(len(s.ids) for s in samples)


def llama_rollouts(oracle: LlamaOracle, prompts: list[list[int]], new: int, texts: list[str] | None = None) -> int:
    """Greedy completions from llama.cpp, one request after another; returns the tokens generated."""
    total = 0
    for p in prompts:
        req = {"prompt": p, "n_predict": new, "temperature": 0.0, "top_k": 1, "cache_prompt": True}
        req["ignore_eos"] = ARGS.ignore_stop
        r = dict(oracle._server.handle_completions(req))
        total += int(r["usage"]["completion_tokens"])
        if texts is not None:
            texts.append(str(r["choices"][0]["text"]))
    return total


def _show(name: str, f: dict[str, float]) -> None:
    rates = f"{f['tokens_per_s']:7.1f} tok/s wall  {f['tokens_per_cpu_s']:7.1f} tok per CPU-s"
    print(f"{name:34s} {rates}  ({f['tokens']} tokens)")


def main() -> None:
    args, new = ARGS, ARGS.new_tokens
    results: dict[str, Any] = {
        "machine": {**machine(), "jax": jax.__version__, "load_average_start": os.getloadavg()},
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    bb = Backbone.load("smollm2")
    rows = task.load("test")[: args.prompts]
    prompts = [bb.chat_prompt_ids(task.messages(r)) for r in rows]
    group = [p for p in prompts for _ in range(args.group)]
    results["prompt_tokens"] = [len(p) for p in prompts]
    print(f"{len(prompts)} prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, up to {new} new each")
    figures: dict[str, Any] = {}
    stops = () if args.ignore_stop else bb.tokenizer.eog_ids
    cfg = bb.config

    def compiled(rows: list[list[int]], n: int = 1) -> int:
        return _count(decode_batch(bb.params, cfg, rows, max_new_tokens=new, stop_ids=stops, n=n))

    def stepwise(rows: list[list[int]]) -> int:
        return sum(_count(generate(bb.params, cfg, p, max_new_tokens=new, stop_ids=stops)) for p in rows)

    paths: dict[str, Callable[[], int]] = {
        "jax_compiled_batch": lambda: compiled(prompts),
        f"jax_compiled_batch_x{args.group}": lambda: compiled(prompts, n=args.group),  # prefill once per prompt
        "jax_stepwise_one_by_one": lambda: stepwise(prompts),
    }
    for name, fn in paths.items():
        figures[name] = timed(fn)
        _show(name, figures[name])

    oracle = LlamaOracle(bb.file.path, threads=args.threads)
    texts: list[str] = []
    try:
        figures["llama_cpp_one_by_one"] = timed(lambda: llama_rollouts(oracle, prompts, new))
        _show("llama_cpp_one_by_one", figures["llama_cpp_one_by_one"])
        figures[f"llama_cpp_one_by_one_x{args.group}"] = timed(lambda: llama_rollouts(oracle, group, new))
        _show(f"llama_cpp_one_by_one_x{args.group}", figures[f"llama_cpp_one_by_one_x{args.group}"])
        llama_rollouts(oracle, prompts, new, texts)
    finally:
        oracle.close()
    mine = decode_batch(bb.params, cfg, prompts, max_new_tokens=new, stop_ids=stops)
    same = sum(bb.tokenizer.decode(s.ids).strip() == t.strip() for s, t in zip(mine, texts))
    results["greedy_agreement_jax_f32_vs_llama_q4_1"] = f"{same}/{len(prompts)} identical replies"

    # The llama.cpp path with a trained adapter: export it, restart the server with it, decode,
    # then score the rollouts under the jax policy (the numbers a PPO step needs).
    trainer = LoraTrainer.create(bb, LoraConfig(rank=8, alpha=16.0, targets=("q", "v")))
    trainer.lora = jax.tree.map(lambda x: x + 1e-3, trainer.lora)  # non-zero, as after training
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        adapter = trainer.export(Path(tmp) / "adapter.gguf", kind="adapter")
        figures["adapter_export_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        oracle = LlamaOracle(bb.file.path, threads=args.threads, lora=adapter)
        llama_rollouts(oracle, prompts[:1], 1)
        figures["llama_cpp_restart_with_adapter_s"] = time.perf_counter() - t0
        try:
            figures["llama_cpp_with_adapter_one_by_one"] = timed(lambda: llama_rollouts(oracle, prompts, new))
        finally:
            oracle.close()
    _show("llama_cpp_with_adapter_one_by_one", figures["llama_cpp_with_adapter_one_by_one"])
    ids = [tuple(bb.tokenizer.encode(t, parse_special=False)) or (bb.end_of_turn_id,) for t in texts]
    batch = make_batch([Example(tuple(p), c) for p, c in zip(prompts, ids)], pad_id=0)
    trainer.policy_batch(batch, np.zeros(len(prompts)))  # compile
    w0, c0 = time.perf_counter(), time.process_time()
    trainer.policy_batch(batch, np.zeros(len(prompts)))
    figures["jax_rescore_policy_and_ref"] = {"wall_s": time.perf_counter() - w0, "cpu_s": time.process_time() - c0}
    print(
        f"per policy update, llama.cpp path: adapter export {figures['adapter_export_s']:.2f} s, server restart "
        f"{figures['llama_cpp_restart_with_adapter_s']:.2f} s, jax re-scoring of {len(prompts)} rollouts "
        f"(policy + base) {figures['jax_rescore_policy_and_ref']['cpu_s']:.2f} CPU-s"
    )
    results["figures"] = figures
    results["machine"]["load_average_end"] = os.getloadavg()
    write_results(args.out, results)


if __name__ == "__main__":
    main()
