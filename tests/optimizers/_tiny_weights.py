"""A tiny weight-training optimizer for the tests: real LoRA training with `flowc.backbone`.

`TinyLoraSFT` (on the shared `StepOptimizer` skeleton) scores the pipeline on the validation set,
trains a LoRA adapter of every trainable model for a few supervised steps on the training pairs
(question → answer, through the base model's chat template), files it with
`flowc.optimizers.weights.AdapterStore`, scores the patched pipeline, and keeps the adapter when the
score does not drop. The base is a random-init
tiny llama (`tiny_base`), so a run takes seconds on a CPU; llama.cpp serves it like any GGUF.

The suite trains a dozen times in one process: the loaded backbone is shared between runs (it is
immutable), and jax's persistent compilation cache spares recompiling the same training step.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import jax

from flowc.backbone import Backbone, LoraConfig, LoraTrainer, chat_example, make_batch
from flowc.backbone.config import ModelConfig
from flowc.backbone.export import export_params
from flowc.backbone.gguf_io import GGUFModelFile
from flowc.backbone.model import init_params
from flowc.compile import CompiledPipeline
from flowc.optimizers.budget import BudgetExceeded
from flowc.optimizers.scoring import accept
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.optimizers.weights import AdapterStore, TrainableModel, trainable_models
from flowc.runtime.local_profiles import gguf_path

#: A random llama with SmolLM2's vocabulary and chat template (its tokenizer is copied from SmolLM2).
TINY = ModelConfig(
    arch="llama", vocab_size=49152, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=48, head_dim=8,
    rope_theta=10000.0, rms_eps=1e-5, context_length=256,
)  # fmt: skip


def tiny_base(folder: Path) -> Path:
    """Write the tiny base model as an F32 GGUF into `folder`, and keep jax's compiled programs
    in `folder/jax-cache` for the rest of the process."""
    jax.config.update("jax_compilation_cache_dir", str(folder / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    params = init_params(jax.random.PRNGKey(0), TINY, scale=0.3)
    return export_params(params, TINY, folder / "tiny.gguf", tokenizer_from=GGUFModelFile(gguf_path("smollm2")))


@functools.cache
def _backbone(path: Path) -> Backbone:
    return Backbone.load(path)


@dataclass(kw_only=True)
class TinyLoraSFT(StepOptimizer):
    """One step: train an adapter of every trainable model, file it, validate, keep it if the
    validation score does not drop. A job killed during the step trains again on resume, to the
    same adapter (same seed, same data), which `AdapterStore.publish` files under the same name."""

    steps: int = 2
    rank: int = 2
    learning_rate: float = 0.05

    name: ClassVar[str] = "tiny-lora-sft"
    param_kinds: ClassVar[tuple[str, ...]] = ("weights",)

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        return {"validation before": (n_val * best, n_val * worst), "validation after": (n_val * best, n_val * worst)}

    def max_steps(self) -> int:
        return 1

    def finished(self, run: Run) -> bool:
        return int(run.state["step"]) >= 1

    async def step(self, run: Run) -> StepReport:
        budget = run.job.meter.budget
        if budget.seconds is not None and run.job.meter.seconds >= budget.seconds:
            raise BudgetExceeded("seconds", f"the time budget of {budget.seconds}s is spent")
        store = AdapterStore(run.job.rundir.path)
        models = [m for m in trainable_models(run.compiled, self.only, self.frozen) if m.param in run.params]
        values = {m.param: self._train(m, store, run) for m in models}
        val = await run.validate(values)
        accepted = val is not None and accept(val, run.val_best)
        run.state["updates"] += 1
        run.candidate(
            id="c1", parent="base", params={k: v["sha256"] for k, v in values.items()}, scores={"val": val},
            accepted=accepted,
        )  # fmt: skip
        if accepted:
            run.keep(values, val=val, candidate="c1", parent="base")
        return StepReport(val=val, accepted=accepted)

    def _train(self, model: TrainableModel, store: AdapterStore, run: Run) -> dict[str, str]:
        bb = _backbone(model.base_path)
        trainer = LoraTrainer.create(
            bb, LoraConfig(rank=self.rank, alpha=2.0 * self.rank), learning_rate=self.learning_rate, seed=run.seed
        )
        target = run.metric.target
        examples = [
            chat_example(bb.tokenizer, [{"role": "user", "content": str(ex["question"])}], str(ex[target]))
            for ex in run.trainset
        ]
        batch = make_batch(examples, pad_id=bb.end_of_turn_id)
        for _ in range(self.steps):
            trainer.sft_step(batch)
        scratch = trainer.save(store.scratch(model, "final"), extra={"steps": self.steps})
        served = trainer.export(scratch.with_suffix(".gguf"), kind="adapter")
        return store.publish(model, scratch, served).value
