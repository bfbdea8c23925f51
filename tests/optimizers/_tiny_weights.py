"""A tiny weight-training optimizer for the tests: real LoRA training with `flowc.backbone`.

`TinyLoraSFT` scores the pipeline on the validation set, trains a LoRA adapter of every trainable
model for a few supervised steps on the training pairs (question → answer, through the base
model's chat template), files it with `flowc.optimizers.weights.AdapterStore`, scores the patched
pipeline, and keeps the adapter when the score does not drop. Every phase is checkpointed, so a
killed job resumes without training again once the adapter is filed. The base is a random-init
tiny llama (`tiny_base`), so a run takes seconds on a CPU; llama.cpp serves it like any GGUF.

The suite trains a dozen times in one process: the loaded backbone is shared between runs (it is
immutable), and jax's persistent compilation cache spares recompiling the same training step.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import jax

from flowc.backbone import Backbone, LoraConfig, LoraTrainer, chat_example, make_batch
from flowc.backbone.config import ModelConfig
from flowc.backbone.export import export_params
from flowc.backbone.gguf_io import GGUFModelFile
from flowc.backbone.model import init_params
from flowc.compile import CompiledPipeline
from flowc.optimizers.base import AsyncOptimizer, ParamPatch, Provenance
from flowc.optimizers.budget import Budget, BudgetExceeded
from flowc.optimizers.job import Job
from flowc.optimizers.scoring import Metric, accept
from flowc.optimizers.weights import AdapterStore, trainable_models
from flowc.runtime.lm import LMClient
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


@dataclass
class TinyLoraSFT(AsyncOptimizer):
    pipeline_lm: LMClient
    steps: int = 2
    rank: int = 2
    learning_rate: float = 0.05
    only: Sequence[str] | None = None
    frozen: Sequence[str] = ()
    resume: bool = False

    name: ClassVar[str] = "tiny-lora-sft"

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        return {"validation before": (n_val * best, n_val * worst), "validation after": (n_val * best, n_val * worst)}

    async def optimize_async(
        self,
        compiled: CompiledPipeline,
        *,
        trainset: Sequence[Mapping[str, Any]],
        valset: Sequence[Mapping[str, Any]],
        metric: Metric,
        budget: Budget,
        seed: int,
        run_dir: Path | None = None,
    ) -> ParamPatch:
        models = trainable_models(compiled, self.only, self.frozen)
        job = Job(
            self.name,
            compiled,
            pipeline_lm=self.pipeline_lm,
            optimizer_lm=self.pipeline_lm,
            budget=budget,
            seed=seed,
            trainset=trainset,
            valset=valset,
            settings={"steps": self.steps, "rank": self.rank, "learning_rate": self.learning_rate},
            run_dir=run_dir,
            resume=self.resume,
        )
        store = AdapterStore(job.rundir.path)
        st: dict[str, Any] = job.state or {"step": 0, "val_base": None, "values": None, "val_new": None}
        stopped = None
        try:
            if st["val_base"] is None:
                st["val_base"] = (await job.scorer.evaluate(compiled, valset, metric)).mean
                st["step"] = 1
                job.checkpoint(st["step"], st)
            if st["values"] is None:
                if budget.seconds is not None and job.meter.seconds >= budget.seconds:
                    raise BudgetExceeded("seconds", f"the time budget of {budget.seconds}s is spent")
                st["values"] = {m.param: self._train(m, store, trainset, metric, seed) for m in models}
                st["step"] = 2
                job.checkpoint(st["step"], st)
            if st["val_new"] is None:
                patched = compiled.with_params(st["values"])
                st["val_new"] = (await job.scorer.evaluate(patched, valset, metric)).mean
                st["step"] = 3
                job.candidate(
                    step=3,
                    id="c1",
                    parent="base",
                    params={k: v["sha256"] for k, v in st["values"].items()},
                    scores={"val": st["val_new"]},
                    accepted=accept(st["val_new"], st["val_base"]),
                )
                job.checkpoint(st["step"], st)
        except BudgetExceeded as e:
            stopped = f"budget: {e.axis}"
        finally:
            job.close()
        base = st["val_base"] or 0.0
        kept = st["val_new"] is not None and accept(st["val_new"], base)
        values = dict(st["values"]) if kept else {}
        prov = {
            k: Provenance(optimizer=self.name, step=3, candidate="c1", parent="base", scores={"val": st["val_new"]})
            for k in values
        }
        return ParamPatch(
            pipeline=compiled.name,
            base_hash=compiled.hash,
            optimizer=self.name,
            seed=seed,
            params=values,
            provenance=prov,
            scores={"val_before": base, "val_after": st["val_new"] if kept else base},
            budget_used=job.meter.used(),
            stopped_by=stopped,
        )

    def _train(
        self, model: Any, store: AdapterStore, trainset: Sequence[Mapping[str, Any]], metric: Metric, seed: int
    ) -> dict[str, str]:
        bb = _backbone(model.base_path)
        trainer = LoraTrainer.create(
            bb, LoraConfig(rank=self.rank, alpha=2.0 * self.rank), learning_rate=self.learning_rate, seed=seed
        )
        examples = [
            chat_example(bb.tokenizer, [{"role": "user", "content": str(ex["question"])}], str(ex[metric.target]))
            for ex in trainset
        ]
        batch = make_batch(examples, pad_id=bb.end_of_turn_id)
        for _ in range(self.steps):
            trainer.sft_step(batch)
        scratch = trainer.save(store.scratch(model, "final"), extra={"steps": self.steps})
        served = trainer.export(scratch.with_suffix(".gguf"), kind="adapter")
        return store.publish(model, scratch, served).value
