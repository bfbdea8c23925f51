"""How to serve a trained LoRA adapter: llama.cpp's LoRA GGUF over the base file, or a merged GGUF.

    .venv/bin/python benchmarks/bench_adapter_serving.py [--model smollm2] [--rank 8] [--rounds 3] [--max-tokens 48]

An adapter (random, with a non-zero update; rank and targets as `--rank`/`--targets`, q and v by
default, as the backbone's fine-tune demonstration) is made with `flowc.backbone` for the model,
then exported both ways. Measured, side by side in one process:

- export: seconds to write each file, and its size (an optimizer writes one per training round);
- load: seconds to construct the llama.cpp server (flowc's load parameters) for the base alone,
  the base with the LoRA GGUF, and the merged file, alternated over `--rounds`, each in a fresh
  process (a new process is how a loaded model is dropped: xllamacpp's `Server` destructor can
  hang in a race of its shutdown, measured here: 1 in ~10 deletions);
- memory: the resident size each served variant adds to the process;
- serve: prompt-processing and generation tokens/s from llama.cpp's own timings, over the same
  prompts (a short chat turn and a pipeline-sized prompt of ~400 tokens), the three variants
  rotated per prompt so that load from other processes hits them alike; greedy, `--max-tokens`.

The variants are loaded through the runtime (`local_provider.load`, with an adapter for the LoRA
case), so the LoRA path is exactly what `flowc run` serves. Writes `benchmarks/results/adapter_serving.json`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import write_results  # noqa: E402

SHORT = "Write a short story about a cat who learns to sail."
PASSAGE = (
    "The Louvre is the world's most-visited museum, and a historic landmark in Paris, France. It is the home "
    "of some of the best-known works of art, including the Mona Lisa and the Venus de Milo. A central landmark "
    "of the city, it is located on the Right Bank of the Seine in the city's 1st arrondissement. "
)
LONG = "Passages:\n" + PASSAGE * 5 + "\nQuestion: Which museum holds the Mona Lisa, and where is it?\nAnswer briefly."


def make_files(model: str, rank: int, targets: tuple[str, ...], folder: Path) -> dict[str, Any]:
    import jax
    import numpy as np

    from flowc.backbone.checkpoint import save_adapter
    from flowc.backbone.export import export_lora_adapter, export_merged
    from flowc.backbone.gguf_io import GGUFModelFile
    from flowc.backbone.lora import LoraConfig, init_lora
    from flowc.runtime.local_provider import resolve_model_path

    base = GGUFModelFile(resolve_model_path(model))
    cfg = LoraConfig(rank=rank, alpha=2.0 * rank, targets=targets)
    rng = np.random.default_rng(0)
    lora = init_lora(jax.random.PRNGKey(0), cfg, base.config)
    lora = jax.tree.map(lambda x: np.asarray(x) + rng.normal(0.0, 0.02, x.shape).astype(np.float32), lora)
    adapter = save_adapter(folder / "a.safetensors", lora, cfg, base_sha256=base.sha256, model_config=base.config)
    t = time.perf_counter()
    lora_gguf = export_lora_adapter(base, lora, cfg, folder / "a.gguf")
    t_lora = time.perf_counter() - t
    t = time.perf_counter()
    merged = export_merged(base, lora, cfg, folder / "merged.gguf")
    t_merged = time.perf_counter() - t
    return {
        "base": base.path,
        "adapter": adapter,
        "lora_gguf": lora_gguf,
        "merged": merged,
        "export_s": {"lora": round(t_lora, 3), "merged": round(t_merged, 3)},
        "size_mb": {
            "base": round(base.path.stat().st_size / 2**20, 2),
            "lora": round(lora_gguf.stat().st_size / 2**20, 2),
            "merged": round(merged.stat().st_size / 2**20, 2),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2", help="a local profile (smollm2, qwen-coder-0.5b, ...)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--targets", default="q,v")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "adapter_serving.json")
    args = ap.parse_args()

    from flowc.runtime import local_provider
    from flowc.runtime.lm import LoraAdapter
    from flowc.spec.adapters import file_sha256

    model = f"local/{args.model}"
    with tempfile.TemporaryDirectory(prefix="flowc-bench-adapter-") as tmp:
        files = make_files(model, args.rank, tuple(args.targets.split(",")), Path(tmp))
        adapter = LoraAdapter(
            served=str(files["lora_gguf"]),
            sha256=file_sha256(files["adapter"]),
            served_sha256=file_sha256(files["lora_gguf"]),
            base_sha256=file_sha256(files["base"]),
        )
        merged_id = f"local/gguf:{files['merged']}"

        def construct(variant: str) -> float:
            """Seconds to build a server with flowc's load parameters, in a fresh process."""
            path = files["merged"] if variant == "merged" else files["base"]
            lora = str(files["lora_gguf"]) if variant == "lora" else ""
            out = subprocess.run(
                [sys.executable, "-c", _LOAD_ONE, str(path), lora], capture_output=True, text=True, check=True
            )
            return float(out.stdout.strip().splitlines()[-1])

        variants = ("base", "lora", "merged")
        loads: dict[str, list[float]] = {v: [] for v in variants}
        for r in range(args.rounds):
            for v in variants[r % 3 :] + variants[: r % 3]:
                loads[v].append(construct(v))

        rss: dict[str, float] = {}
        servers = {}
        for v, load in (
            ("base", lambda: local_provider.load(model)),
            ("lora", lambda: local_provider.load(model, adapter=adapter)),
            ("merged", lambda: local_provider.load(merged_id)),
        ):
            before = _rss_mb()
            servers[v] = load()
            rss[v] = round(_rss_mb() - before, 1)
        stats: dict[str, dict[str, list[float]]] = {
            v: {"prompt_ms": [], "prompt_n": [], "gen_ms": [], "gen_n": []} for v in variants
        }
        replies: dict[str, list[str]] = {v: [] for v in variants}
        prompts = [SHORT, LONG] * args.rounds
        for i, prompt in enumerate(prompts):
            for v in variants[i % 3 :] + variants[: i % 3]:
                body = {
                    "messages": [{"role": "user", "content": prompt}],
                    "max_tokens": args.max_tokens,
                    "temperature": 0.0,
                    "cache_prompt": False,
                }
                out = servers[v].server.handle_chat_completions(body)
                tm = out["timings"]
                stats[v]["prompt_ms"].append(tm["prompt_ms"])
                stats[v]["prompt_n"].append(tm["prompt_n"])
                stats[v]["gen_ms"].append(tm["predicted_ms"])
                stats[v]["gen_n"].append(tm["predicted_n"])
                if i < 2:
                    replies[v].append(out["choices"][0]["message"]["content"][:80])

    def rate(v: str, n: str, ms: str) -> float:
        return round(1000.0 * sum(stats[v][n]) / max(sum(stats[v][ms]), 1e-9), 1)

    serve = {
        v: {"prompt_tok_s": rate(v, "prompt_n", "prompt_ms"), "gen_tok_s": rate(v, "gen_n", "gen_ms")} for v in variants
    }
    load_s = {v: round(statistics.median(x), 3) for v, x in loads.items()}
    payload = {
        "model": model,
        "lora": {"rank": args.rank, "targets": args.targets.split(",")},
        "rounds": args.rounds,
        "max_tokens": args.max_tokens,
        "export_s": files["export_s"],
        "size_mb": files["size_mb"],
        "load_s_median": load_s,
        "load_s_all": {v: [round(x, 3) for x in xs] for v, xs in loads.items()},
        "rss_added_mb": rss,
        "serve": serve,
        "ratios": {
            "lora_vs_merged_gen": round(serve["lora"]["gen_tok_s"] / serve["merged"]["gen_tok_s"], 3),
            "lora_vs_merged_prompt": round(serve["lora"]["prompt_tok_s"] / serve["merged"]["prompt_tok_s"], 3),
            "merged_vs_base_gen": round(serve["merged"]["gen_tok_s"] / serve["base"]["gen_tok_s"], 3),
            "lora_vs_merged_load": round(load_s["lora"] / load_s["merged"], 3),
        },
        "same_greedy_reply_lora_and_merged": replies["lora"] == replies["merged"],
        "replies": replies,
    }
    for k in ("export_s", "size_mb", "load_s_median", "rss_added_mb", "serve", "ratios"):
        print(f"{k}: {payload[k]}")
    write_results(args.out, payload)
    sys.stdout.flush()
    os._exit(0)  # the results are written; skip xllamacpp's destructors, which can hang (see above)


def _rss_mb() -> float:
    """Peak resident size of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# Run in a fresh process: load one server, print the seconds it took, exit without destroying it.
_LOAD_ONE = """
import os, sys, time
from pathlib import Path
import xllamacpp
from flowc.runtime import local_provider
params = local_provider._params(Path(sys.argv[1]), 2048, local_provider.LocalModelOptions())
if sys.argv[2]:
    params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(sys.argv[2], 1.0)]
t = time.perf_counter()
server = xllamacpp.Server(params)
print(time.perf_counter() - t, flush=True)
os._exit(0)
"""


if __name__ == "__main__":
    main()
