"""Few-shot bootstrap (the idea of DSPy's BootstrapFewShot, with its random-search selection).

1. Run the pipeline on training examples (in a seeded order); when the metric says a run succeeded
   (score ≥ `threshold`), every trainable `llm` node's inputs and outputs in that run become a
   candidate demo for that node, until each node has `max_bootstrapped` of them.
2. Build `num_candidates` demo sets (the first `max_demos` harvested, then seeded random samples),
   score each on the validation set, and keep the best — only if it does not score below the
   pipeline without new demos (the validation gate).

Each harvested run and each scored candidate is one step: checkpointed, so a killed job resumes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.optimizers.base import AsyncOptimizer, ParamPatch, Provenance, trainable_params
from flowc.optimizers.budget import Budget, BudgetExceeded
from flowc.optimizers.job import Job
from flowc.optimizers.scoring import Metric, accept
from flowc.runtime.lm import LMClient


@dataclass
class BootstrapFewShot(AsyncOptimizer):
    """Args:
    pipeline_lm: the client the pipeline's nodes call.
    max_demos: demos per node in a candidate set.
    max_bootstrapped: successful demos to harvest per node before stopping.
    num_candidates: demo sets scored on the validation set.
    threshold: a run whose score is at least this counts as a success.
    only / frozen: restrict which params train (param or node names).
    """

    pipeline_lm: LMClient
    max_demos: int = 4
    max_bootstrapped: int = 8
    num_candidates: int = 4
    threshold: float = 1.0
    only: Sequence[str] | None = None
    frozen: Sequence[str] = ()
    resume: bool = False

    name: ClassVar[str] = "bootstrap"

    def settings(self) -> dict[str, Any]:
        return {
            "max_demos": self.max_demos,
            "max_bootstrapped": self.max_bootstrapped,
            "num_candidates": self.num_candidates,
            "threshold": self.threshold,
            "only": list(self.only or []),
            "frozen": list(self.frozen),
        }

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        """LM calls (best, worst) of each phase, for --dry-run."""
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        return {
            "validation baseline": (n_val * best, n_val * worst),
            "harvest (train runs)": (min(n_train, self.max_bootstrapped) * best, n_train * worst),
            "candidate scoring": (0, self.num_candidates * n_val * worst),
        }

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
        params = trainable_params(compiled, self.only, self.frozen, kinds=("demos",))
        job = Job(
            self.name,
            compiled,
            pipeline_lm=self.pipeline_lm,
            optimizer_lm=self.pipeline_lm,
            budget=budget,
            seed=seed,
            trainset=trainset,
            valset=valset,
            settings=self.settings(),
            run_dir=run_dir,
            resume=self.resume,
        )
        st: dict[str, Any] = job.state or {
            "step": 0,
            "harvest_pos": 0,
            "harvested": {p: [] for p in params},
            "val_base": None,
            "scored": [],
        }
        order = list(range(len(trainset)))
        random.Random(seed).shuffle(order)
        stopped = None
        try:
            if st["val_base"] is None:
                st["val_base"] = (await job.scorer.evaluate(compiled, valset, metric)).mean
                st["step"] += 1
                job.checkpoint(st["step"], st)
            while st["harvest_pos"] < len(order) and any(
                len(v) < self.max_bootstrapped for v in st["harvested"].values()
            ):
                ex = trainset[order[st["harvest_pos"]]]
                ev = await job.scorer.evaluate(compiled, [ex], metric)
                item = ev.items[0]
                if item.score >= self.threshold:
                    self._harvest(compiled, item.run, st["harvested"])
                st["harvest_pos"] += 1
                st["step"] += 1
                job.log(step=st["step"], event="harvest", example=order[st["harvest_pos"] - 1], score=item.score)
                job.checkpoint(st["step"], st)
            candidates = self._candidate_sets(st["harvested"], seed)
            for i in range(len(st["scored"]), len(candidates)):
                cand = candidates[i]
                patched = compiled.with_params(self._values(compiled, cand))
                score = (await job.scorer.evaluate(patched, valset, metric)).mean
                st["scored"].append(score)
                st["step"] += 1
                job.candidate(
                    step=st["step"],
                    id=f"c{i}",
                    parent="base",
                    params={k: len(v) for k, v in cand.items()},
                    scores={"val": score},
                    accepted=accept(score, st["val_base"]),
                )
                job.checkpoint(st["step"], st)
        except BudgetExceeded as e:
            stopped = f"budget: {e.axis}"
        finally:
            job.close()
        scored = st["scored"]
        best = max(range(len(scored)), key=lambda i: (scored[i], -i)) if scored else None
        values: dict[str, Any] = {}
        prov: dict[str, Provenance] = {}
        val_after = st["val_base"] or 0.0
        if best is not None and accept(scored[best], st["val_base"] or 0.0):
            cand = self._candidate_sets(st["harvested"], seed)[best]
            values = self._values(compiled, cand)
            val_after = scored[best]
            for name in values:
                prov[name] = Provenance(
                    optimizer=self.name,
                    step=st["step"],
                    candidate=f"c{best}",
                    parent="base",
                    scores={"val_before": st["val_base"] or 0.0, "val_after": scored[best]},
                    rationale=f"{len(values[name])} demo(s) from successful training runs",
                )
        return ParamPatch(
            pipeline=compiled.name,
            base_hash=compiled.hash,
            optimizer=self.name,
            seed=seed,
            params=values,
            provenance=prov,
            scores={"val_before": st["val_base"] or 0.0, "val_after": val_after},
            budget_used=job.meter.used(),
            stopped_by=stopped,
        )

    def _harvest(self, compiled: CompiledPipeline, run: Any, harvested: dict[str, list[dict[str, Any]]]) -> None:
        for step in run.steps:
            name = f"{step.node}.demos"
            if name not in harvested or step.status != "ok" or step.kind not in ("llm",):
                continue
            if len(harvested[name]) >= self.max_bootstrapped:
                continue
            demo = {**step.inputs, **{k: v for k, v in step.outputs.items() if v is not None}}
            if demo not in harvested[name]:
                harvested[name].append(demo)

    def _candidate_sets(self, harvested: dict[str, list[dict[str, Any]]], seed: int) -> list[dict[str, list[Any]]]:
        if not any(harvested.values()):
            return []
        rng = random.Random(seed + 1)
        sets = [{k: v[: self.max_demos] for k, v in harvested.items()}]
        for _ in range(self.num_candidates - 1):
            sets.append({k: rng.sample(v, min(self.max_demos, len(v))) for k, v in harvested.items()})
        unique: list[dict[str, list[Any]]] = []
        for s in sets:
            if s not in unique:
                unique.append(s)
        return unique

    def _values(self, compiled: CompiledPipeline, cand: dict[str, list[Any]]) -> dict[str, Any]:
        return {k: v for k, v in cand.items() if v and k in compiled.params}
