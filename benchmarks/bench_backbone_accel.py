"""Backbone speed on whatever jax finds (a GPU, or this CPU): forward, LoRA step, compiled decode.

Random weights at the SmolLM2-135M and Qwen2.5-1.5B shapes (no model files), in bfloat16 and
float32: tokens/s and model-FLOPs utilization (MFU) of the forward pass and of a LoRA SFT step,
the compiled memory of each program, and the decode throughput of the compiled loop
(`flowc/backbone/decode.py`) single-stream and batched, next to the step-by-step decoder.

    python benchmarks/bench_backbone_accel.py --quick              # this CPU, small sizes, ~minutes
    python benchmarks/bench_backbone_accel.py                      # a GPU: B=16, T=1024 (see accel_check.sh)
    python benchmarks/bench_backbone_accel.py --peak-tflops 790 --budget-seconds 420 --out /tmp/x.json

Every configuration runs on its own: one that fails (out of memory, an unsupported kernel) is
recorded with its error and the others go on; the JSON file is rewritten after each one. MFU
counts the FLOPs the program must do (see `model_flops`): a LoRA step computes no gradient for the
frozen base weights, so it costs about two forward passes, not three.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
import types
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

try:
    import flowc  # noqa: F401
except ImportError as exc:  # a bare jax machine without the compiler's dependencies (pydantic, lark, ...)
    package = types.ModuleType("flowc")
    package.__path__ = [str(ROOT / "flowc")]
    sys.modules["flowc"] = package
    print(f"note: 'import flowc' failed ({exc}); loading flowc.backbone on its own")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from _common import machine, package_version, write_results  # noqa: E402

from flowc.backbone.attention import choose_implementation  # noqa: E402
from flowc.backbone.config import ModelConfig  # noqa: E402
from flowc.backbone.decode import decode_batch  # noqa: E402
from flowc.backbone.generate import generate  # noqa: E402
from flowc.backbone.lora import TARGETS, LoraConfig, init_lora, projection_shape  # noqa: E402
from flowc.backbone.model import cast_params, forward, init_params  # noqa: E402
from flowc.backbone.objectives import sft_loss  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "backbone_accel.json"

SHAPES: dict[str, ModelConfig] = {
    # HuggingFaceTB/SmolLM2-135M-Instruct (as its GGUF declares it)
    "smollm2-135m": ModelConfig(
        arch="llama", vocab_size=49152, dim=576, n_layers=30, n_heads=9, n_kv_heads=3, hidden_dim=1536,
        head_dim=64, rope_theta=100000.0, rms_eps=1e-5, context_length=8192,
    ),
    # Qwen/Qwen2.5-1.5B(-Instruct): tied embeddings, q/k/v biases, neox rotary
    "qwen2.5-1.5b": ModelConfig(
        arch="qwen2", vocab_size=151936, dim=1536, n_layers=28, n_heads=12, n_kv_heads=2, hidden_dim=8960,
        head_dim=128, rope_theta=1000000.0, rms_eps=1e-6, context_length=32768, rope_style="neox",
        tied_embeddings=True, qkv_bias=True,
    ),
    # a small qwen2-family shape for --quick on a CPU (untied head, biases, neox)
    "qwen2-tiny": ModelConfig(
        arch="qwen2", vocab_size=4096, dim=256, n_layers=4, n_heads=4, n_kv_heads=2, hidden_dim=512,
        head_dim=64, rope_theta=1000000.0, rms_eps=1e-6, context_length=4096, rope_style="neox",
        tied_embeddings=False, qkv_bias=True,
    ),
}  # fmt: skip

# bfloat16 dense peak (FLOP/s) and memory bandwidth (B/s) by device kind, as measured on an H200
# (../shared/docs/ASSETS.md); --peak-tflops gives the peak for any other chip.
PEAKS: dict[str, tuple[float, float]] = {"H200": (790e12, 4.3e12)}
LORA = LoraConfig(rank=16, alpha=32.0, targets=("q", "k", "v", "o"))


# -- FLOPs ------------------------------------------------------------------------------------


def _dense_params(cfg: ModelConfig) -> int:
    """Weights multiplied per token in the blocks (the head is counted separately)."""
    per_layer = cfg.dim * cfg.q_dim + 2 * cfg.dim * cfg.kv_dim + cfg.q_dim * cfg.dim + 3 * cfg.dim * cfg.hidden_dim
    return cfg.n_layers * per_layer


def model_flops(cfg: ModelConfig, batch: int, seq: int, *, step: bool, lora: LoraConfig = LORA) -> float:
    """FLOPs of a forward pass (logits at every position) or of a LoRA step scoring every position.

    Matmuls count 2 FLOPs per multiply-add; attention is counted at its causal cost (query i reads
    i + 1 keys), as the fused kernel skips masked blocks. A LoRA step = the forward, the input
    gradients of every frozen matmul (one more pass: no weight gradients), attention's backward
    (twice its forward) and the adapter's own forward and gradients.
    """
    tokens = batch * seq
    dense = 2.0 * _dense_params(cfg) * tokens
    head = 2.0 * cfg.dim * cfg.vocab_size * tokens
    attn = 2.0 * 2.0 * cfg.n_layers * cfg.q_dim * batch * seq * (seq + 1) / 2
    if not step:
        return dense + head + attn
    adapters = sum(sum(projection_shape(cfg, TARGETS[t])) for t in lora.targets)
    lora_flops = 6.0 * lora.rank * adapters * cfg.n_layers * tokens
    return 2 * (dense + head) + 3 * attn + lora_flops


# -- measuring -------------------------------------------------------------------------------


def _memory(compiled: Any) -> dict[str, float] | None:
    """The compiled program's buffers in GiB, where the backend reports them."""
    try:
        m = compiled.memory_analysis()
    except Exception:  # not every backend implements it
        return None
    if m is None:
        return None
    fields = ("temp_size_in_bytes", "argument_size_in_bytes", "output_size_in_bytes", "alias_size_in_bytes")
    return {f.removesuffix("_size_in_bytes") + "_gib": getattr(m, f, 0) / 2**30 for f in fields}


def _device_peak_gib() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return None if peak is None else peak / 2**30


def _time(run: Callable[[], Any], out: dict[str, Any], *, min_runs: int = 3, min_seconds: float) -> float:
    """Median seconds of warm runs (at least `min_runs`, and more until `min_seconds` have passed).

    On a CPU it also notes the median CPU seconds of this process in `out`: on a shared machine,
    work per token survives other jobs' load better than wall time does.
    """
    jax.block_until_ready(run())  # warm-up
    runs: list[float] = []
    cpu: list[float] = []
    start = time.perf_counter()
    while len(runs) < min_runs or (time.perf_counter() - start < min_seconds and len(runs) < 50):
        t0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(run())
        runs.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if jax.default_backend() == "cpu":
        out["cpu_seconds"] = float(np.median(cpu))
    return float(np.median(runs))


@dataclasses.dataclass
class Bench:
    """The run's settings, its results and the file they go to."""

    args: argparse.Namespace
    results: dict[str, Any]
    out: Path
    peak_flops: float | None
    peak_bandwidth: float | None
    started: float = dataclasses.field(default_factory=time.perf_counter)

    def over_budget(self) -> bool:
        return time.perf_counter() - self.started > self.args.budget_seconds

    def record(self, name: str, fn: Callable[[str], dict[str, Any]], attention: str = "auto", dtype: str = "") -> None:
        """Run one configuration; keep its figures or its error; rewrite the JSON.

        Where "auto" meant cuDNN and it failed (a jax or cuDNN version without the kernel), the
        configuration runs again with XLA attention and both outcomes are kept.
        """
        if self.over_budget():
            self.results["configs"][name] = {"skipped": f"over the {self.args.budget_seconds:.0f} s budget"}
            print(f"{name}: skipped (budget)")
            return
        t0 = time.perf_counter()
        impl = choose_implementation(jnp.dtype(dtype), has_mask=False) if attention == "auto" and dtype else attention
        entry = self._attempt(name, fn, attention)
        if "error" in entry and impl == "cudnn" and not self.over_budget():
            print(f"{name}: retrying with XLA attention")
            entry = {**self._attempt(name, fn, "xla"), "cudnn_error": entry["error"], "attention": "xla"}
        else:
            entry["attention"] = impl
        entry["wall_s"] = time.perf_counter() - t0
        entry["device_peak_gib"] = _device_peak_gib()
        self.results["configs"][name] = entry
        write_results(self.out, self.results)

    def _attempt(self, name: str, fn: Callable[[str], dict[str, Any]], attention: str) -> dict[str, Any]:
        try:
            return fn(attention)
        except Exception as e:  # one failing configuration must not lose the others
            print(f"{name}: FAILED {type(e).__name__}: {str(e)[:300]}")
            return {"error": f"{type(e).__name__}: {str(e)[:2000]}", "traceback": traceback.format_exc()[-3000:]}

    def mfu(self, flops: float, seconds: float) -> float | None:
        return None if self.peak_flops is None else flops / seconds / self.peak_flops


def bench_forward(b: Bench, cfg: ModelConfig, params: Any, batch: int, seq: int, attention: str) -> dict[str, Any]:
    tokens = jnp.asarray(np.random.RandomState(0).randint(0, cfg.vocab_size, (batch, seq)), jnp.int32)

    def fwd(p: Any, t: jax.Array) -> jax.Array:  # logsumexp keeps the (B, T, V) logits out of the output
        return jax.nn.logsumexp(forward(p, cfg, t, attention=attention), axis=-1)

    t0 = time.perf_counter()
    compiled = jax.jit(fwd).lower(params, tokens).compile()
    compile_s = time.perf_counter() - t0
    out: dict[str, Any] = {"batch": batch, "seq": seq}
    seconds = _time(lambda: compiled(params, tokens), out, min_seconds=b.args.min_seconds)
    flops = model_flops(cfg, batch, seq, step=False)
    out |= {"seconds": seconds, "tokens_per_s": batch * seq / seconds}
    out |= {"tflops_per_s": flops / seconds / 1e12, "mfu": b.mfu(flops, seconds), "compile_s": compile_s}
    out["memory"] = _memory(compiled)
    return out


def _optimizer() -> tuple[Callable[[Any], Any], Callable[[Any, Any, Any], tuple[Any, Any]], str]:
    """AdamW from optax where installed; otherwise a plain Adam in jax (the step's cost is the same)."""
    try:
        import optax
    except ImportError:
        lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8

        def init(p: Any) -> Any:
            return (jax.tree.map(jnp.zeros_like, p), jax.tree.map(jnp.zeros_like, p), jnp.int32(0))

        def update(g: Any, state: Any, p: Any) -> tuple[Any, Any]:
            m, v, n = state
            n = n + 1
            m = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, m, g)
            v = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, v, g)
            step = lr * jnp.sqrt(1 - b2**n) / (1 - b1**n)
            p = jax.tree.map(lambda p, m, v: p - step * m / (jnp.sqrt(v) + eps), p, m, v)
            return p, (m, v, n)

        return init, update, "adam (jax, optax not installed)"
    opt = optax.adamw(1e-3, weight_decay=0.0)

    def opt_update(g: Any, state: Any, p: Any) -> tuple[Any, Any]:
        updates, state = opt.update(g, state, p)
        return optax.apply_updates(p, updates), state

    return opt.init, opt_update, f"optax.adamw {package_version('optax')}"


def bench_step(b: Bench, cfg: ModelConfig, params: Any, batch: int, seq: int, attention: str) -> dict[str, Any]:
    rng = np.random.RandomState(1)
    data = {
        "tokens": jnp.asarray(rng.randint(0, cfg.vocab_size, (batch, seq)), jnp.int32),
        "positions": jnp.broadcast_to(jnp.arange(seq, dtype=jnp.int32), (batch, seq)),
        "targets": jnp.asarray(rng.randint(0, cfg.vocab_size, (batch, seq)), jnp.int32),
        "weights": jnp.ones((batch, seq), jnp.float32),
    }
    init, update, opt_name = _optimizer()
    lora = init_lora(jax.random.PRNGKey(0), LORA, cfg)  # float32 master weights
    state = init(lora)

    def step(lora: Any, state: Any, params: Any, data: dict[str, jax.Array]) -> Any:
        loss, grads = jax.value_and_grad(sft_loss)(lora, params, cfg, data, lora_scale=LORA.scale, attention=attention)
        lora, state = update(grads, state, lora)
        return lora, state, loss

    t0 = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(lora, state, params, data).compile()
    compile_s = time.perf_counter() - t0
    carry = {"lora": lora, "state": state, "loss": None}

    def run() -> Any:
        carry["lora"], carry["state"], carry["loss"] = compiled(carry["lora"], carry["state"], params, data)
        return carry["loss"]

    out: dict[str, Any] = {"batch": batch, "seq": seq}
    seconds = _time(run, out, min_seconds=b.args.min_seconds)
    loss = float(carry["loss"])
    flops = model_flops(cfg, batch, seq, step=True)
    out |= {"seconds": seconds, "tokens_per_s": batch * seq / seconds}
    out |= {"tflops_per_s": flops / seconds / 1e12, "mfu": b.mfu(flops, seconds), "compile_s": compile_s}
    out |= {"loss": loss, "loss_finite": bool(np.isfinite(loss)), "optimizer": opt_name, "lora": LORA.to_dict()}
    out["master_dtype"] = str(jax.tree.leaves(carry["lora"])[0].dtype)
    out["memory"] = _memory(compiled)
    return out


def bench_decode(
    b: Bench, cfg: ModelConfig, params: Any, batch: int, attention: str = "auto", legacy: bool = False
) -> dict[str, Any]:
    prompt_len, new = b.args.decode_prompt, b.args.decode_new
    rng = np.random.RandomState(2)
    # Different prompts of different lengths (up to prompt_len), as rollouts have.
    prompts = [list(rng.randint(0, cfg.vocab_size, prompt_len - (i % 4) * prompt_len // 8)) for i in range(batch)]
    if legacy:  # the step-by-step decoder: one prompt, one Python round trip per token
        new = min(new, b.args.legacy_new)

        def run() -> Any:
            return generate(params, cfg, prompts[0], max_new_tokens=new)

    else:

        def run() -> Any:
            # No stop ids: every row runs to `new` tokens.
            return decode_batch(params, cfg, prompts, max_new_tokens=new, attention=attention)

    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    out: dict[str, Any] = {"batch": 1 if legacy else batch, "prompt_tokens": prompt_len, "new_tokens": new}
    seconds = _time(run, out, min_runs=2, min_seconds=b.args.min_seconds)
    generated = new * (1 if legacy else batch)
    out["seconds"] = seconds
    out |= {"tokens_per_s": generated / seconds, "first_call_s": first, "includes_prefill": True}
    if b.peak_bandwidth:
        # What one decode step must read: every weight once, plus each row's cache so far.
        itemsize = jnp.dtype(jax.tree.leaves(params)[0].dtype).itemsize
        weights = sum(x.size for x in jax.tree.leaves(params)) * itemsize
        cache = 2 * cfg.n_layers * cfg.kv_dim * itemsize * out["batch"] * (prompt_len + new / 2)
        out["bandwidth_util_est"] = (weights + cache) * new / seconds / b.peak_bandwidth
    return out


# -- the run ---------------------------------------------------------------------------------


def _peaks(args: argparse.Namespace, kind: str) -> tuple[float | None, float | None]:
    for name, (flops, bandwidth) in PEAKS.items():
        if name.lower() in kind.lower():
            return (args.peak_tflops * 1e12 if args.peak_tflops else flops), bandwidth
    return (args.peak_tflops * 1e12 if args.peak_tflops else None), None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--quick", action="store_true", help="small sizes for a CPU (smollm2-135m and qwen2-tiny)")
    ap.add_argument("--shapes", default=None, help="comma-separated: " + ", ".join(SHAPES))
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--parts", default="step,forward,decode,legacy", help="any of step, forward, decode, legacy")
    ap.add_argument("--batch", type=int, default=None, help="B of forward and step (default 16; --quick 2)")
    ap.add_argument("--seq", type=int, default=None, help="T of forward and step (default 1024; --quick 64)")
    ap.add_argument("--f32-batch", type=int, default=None, help="B for float32 (default 4: XLA attention)")
    ap.add_argument("--decode-batch", type=int, default=None, help="rows of the batched decode (default 64)")
    ap.add_argument("--decode-prompt", type=int, default=None, help="prompt tokens (default 128)")
    ap.add_argument("--decode-new", type=int, default=None, help="generated tokens per row (default 256)")
    ap.add_argument("--legacy-new", type=int, default=32, help="tokens for the step-by-step decoder")
    ap.add_argument("--attention", default="auto", help="auto, cudnn, xla or reference")
    ap.add_argument("--peak-tflops", type=float, default=None, help="bf16 peak for MFU (H200: 790, detected)")
    ap.add_argument("--budget-seconds", type=float, default=float("inf"), help="skip what starts after this")
    ap.add_argument("--min-seconds", type=float, default=2.0, help="time each measurement at least this long")
    ap.add_argument("--out", type=Path, default=None, help="default: results/backbone_accel[_quick].json")
    args = ap.parse_args()
    quick = args.quick
    args.out = args.out or (OUT.with_name("backbone_accel_quick.json") if quick else OUT)
    shapes = (args.shapes or ("smollm2-135m,qwen2-tiny" if quick else "qwen2.5-1.5b,smollm2-135m")).split(",")
    args.batch = args.batch or (2 if quick else 16)
    args.seq = args.seq or (64 if quick else 1024)
    args.f32_batch = args.f32_batch or (args.batch if quick else 4)
    args.decode_batch = args.decode_batch or (4 if quick else 64)
    args.decode_prompt = args.decode_prompt or (16 if quick else 128)
    args.decode_new = args.decode_new or (16 if quick else 256)
    if quick:
        args.legacy_new = min(args.legacy_new, 16)
    parts = set(args.parts.split(","))

    devices = jax.devices()
    kind = devices[0].device_kind
    print(f"jax {jax.__version__} on {jax.default_backend()}: {devices}  (kind: {kind})")
    peak_flops, peak_bw = _peaks(args, kind)
    info = {
        "jax": jax.__version__,
        "jaxlib": package_version("jaxlib"),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in devices],
        "device_kind": kind,
        "peak_bf16_flops": peak_flops,
        "peak_bandwidth": peak_bw,
        "attention_auto": {dt: choose_implementation(jnp.dtype(dt), has_mask=False) for dt in ("bfloat16", "float32")},
    }
    print(f"peak bf16 FLOP/s for MFU: {peak_flops or 'unknown (pass --peak-tflops)'}")
    print(f"attention 'auto' means: {info['attention_auto']}")
    results: dict[str, Any] = {
        "machine": {**machine(), **info},
        "settings": {k: (v if v != float("inf") else None) for k, v in vars(args).items() if k != "out"},
        "flops_convention": model_flops.__doc__,
        "configs": {},
    }
    bench = Bench(args, results, args.out, peak_flops, peak_bw)
    write_results(args.out, results)

    # Every bfloat16 figure first (the accelerator's case), then float32; a shape's parts in order
    # of importance, so that a budget cut drops the least useful ones.
    for dtype in args.dtypes.split(","):
        for shape in shapes:
            cfg = SHAPES[shape]
            try:
                params = cast_params(init_params(jax.random.PRNGKey(0), cfg), jnp.dtype(dtype))
            except Exception as e:  # e.g. out of memory: the other shapes still run
                results["configs"][f"{shape}/{dtype}"] = {"error": f"random weights: {type(e).__name__}: {e}"[:2000]}
                continue
            _run_shape(bench, cfg, params, f"{shape}/{dtype}", dtype, parts)
            del params
    print(f"total {time.perf_counter() - bench.started:.0f} s")


def _decode_rows(bench: Bench, cfg: ModelConfig, params: Any, rows: int, attention: str) -> dict[str, Any]:
    return bench_decode(bench, cfg, params, rows, attention)


def _run_shape(bench: Bench, cfg: ModelConfig, params: Any, tag: str, dtype: str, parts: set[str]) -> None:
    args = bench.args
    batch = args.f32_batch if dtype == "float32" else args.batch
    attn = args.attention
    if "step" in parts:
        bench.record(f"{tag}/step", lambda a: bench_step(bench, cfg, params, batch, args.seq, a), attn, dtype)
    if "forward" in parts:
        bench.record(f"{tag}/forward", lambda a: bench_forward(bench, cfg, params, batch, args.seq, a), attn, dtype)
    # float32 decoding only where it is the compute dtype of choice: on a CPU.
    decode = dtype != "float32" or jax.default_backend() == "cpu"
    if "decode" in parts and decode:
        for rows in (1, args.decode_batch):
            run = partial(_decode_rows, bench, cfg, params, rows)
            bench.record(f"{tag}/decode_b{rows}", run, attn, dtype)
    if "legacy" in parts and decode:
        bench.record(f"{tag}/decode_stepwise_b1", lambda a: bench_decode(bench, cfg, params, 1, legacy=True))
    _report(bench.results["configs"], tag)


def _report(configs: dict[str, Any], tag: str) -> None:
    for name, e in configs.items():
        if not name.startswith(tag + "/"):
            continue
        if "tokens_per_s" not in e:
            print(f"  {name:40s} {e.get('error') or e.get('skipped')}"[:300])
            continue
        mfu = f"MFU {e['mfu']:6.1%}" if e.get("mfu") is not None else ""
        mem = (e.get("memory") or {}).get("temp_gib")
        extra = f"temp {mem:.1f} GiB" if mem is not None else ""
        shape = f"B={e['batch']} T={e.get('seq', e.get('new_tokens'))}"
        if "cpu_seconds" in e:
            tokens = e["tokens_per_s"] * e["seconds"]
            extra += f"  {tokens / e['cpu_seconds']:.1f} tok per CPU-s"
        print(f"  {name:40s} {shape:14s} {e['tokens_per_s']:12.1f} tok/s  {mfu}  {extra}")


if __name__ == "__main__":
    main()
