"""Few-shot bootstrap (the idea of DSPy's BootstrapFewShot, with its random-search selection).

1. Run the pipeline on training examples (in a seeded order); when the metric says a run succeeded
   (score ≥ `threshold`), every trainable `llm` node's inputs and outputs in that run become a
   candidate demo for that node, until each node has `max_bootstrapped` of them.
2. Build `num_candidates` demo sets (the first `max_demos` harvested, then seeded random samples),
   score each on the validation set, and keep the best — only if it does not score below the
   pipeline without new demos (the validation gate).

Each harvested run and each scored candidate is one step of the shared skeleton (`StepOptimizer`):
checkpointed, so a killed job resumes.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.optimizers.scoring import accept
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.runtime.trace import RunResult


@dataclass
class BootstrapFewShot(StepOptimizer):
    """Args:
    pipeline_lm: the client the pipeline's nodes call.
    max_demos: demos per node in a candidate set.
    max_bootstrapped: successful demos to harvest per node before stopping.
    num_candidates: demo sets scored on the validation set.
    threshold: a run whose score is at least this counts as a success.
    only / frozen / resume / progress: see `StepOptimizer`.
    """

    max_demos: int = 4
    max_bootstrapped: int = 8
    num_candidates: int = 4
    threshold: float = 1.0

    name: ClassVar[str] = "bootstrap"
    param_kinds: ClassVar[tuple[str, ...]] = ("demos",)
    needs_params: ClassVar[bool] = False

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        """LM calls (best, worst) of each phase, for --dry-run."""
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        return {
            "validation baseline": (n_val * best, n_val * worst),
            "harvest (train runs)": (min(n_train, self.max_bootstrapped) * best, n_train * worst),
            "candidate scoring": (0, self.num_candidates * n_val * worst),
        }

    # -- the skeleton's hooks ---------------------------------------------------------------------

    def fresh_state(self, run: Run) -> dict[str, Any]:
        order = list(range(len(run.trainset)))
        random.Random(run.seed).shuffle(order)
        return {
            "order": order,
            "harvest_pos": 0,
            "harvested": {p: [] for p in run.params},
            "scored": [],
            "best": None,  # index of the best candidate scored so far
        }

    def _harvesting(self, st: Mapping[str, Any]) -> bool:
        return st["harvest_pos"] < len(st["order"]) and any(
            len(v) < self.max_bootstrapped for v in st["harvested"].values()
        )

    def finished(self, run: Run) -> bool:
        st = run.state
        if self._harvesting(st):
            return False
        return len(st["scored"]) >= len(self._candidate_sets(st["harvested"], run.seed))

    def max_steps(self) -> int | None:
        return None  # the harvest stops early once every node has its demos

    async def step(self, run: Run) -> StepReport:
        st = run.state
        if self._harvesting(st):
            index = st["order"][st["harvest_pos"]]
            item = (await run.evaluate(run.compiled, [run.trainset[index]])).items[0]
            if item.score >= self.threshold:
                self._harvest(item.run, st["harvested"])
            st["harvest_pos"] += 1
            run.log(event="harvest", example=index, score=item.score)
            return StepReport(train=item.score, phase="harvest")
        i = len(st["scored"])
        cand = self._candidate_sets(st["harvested"], run.seed)[i]
        values = self._values(run.compiled, cand)
        score = (await run.evaluate(run.compiled.with_params(values), run.valset)).mean
        st["scored"].append(score)
        st["updates"] += 1
        better = st["best"] is None or score > st["scored"][st["best"]]  # ties: the earlier set
        kept = better and accept(score, float(st["val_base"] or 0.0))
        if better:
            st["best"] = i
        if kept:
            full = {p: values.get(p, run.compiled.params[p].value) for p in run.params}
            run.keep(
                full,
                val=score,
                candidate=f"c{i}",
                parent="base",
                rationale={p: f"{len(v)} demo(s) from successful training runs" for p, v in values.items()},
            )
        run.candidate(
            id=f"c{i}",
            parent="base",
            params={k: len(v) for k, v in cand.items()},
            scores={"val": score},
            accepted=accept(score, float(st["val_base"] or 0.0)),
        )
        return StepReport(val=score, accepted=kept, phase="candidates")

    def _harvest(self, trace: RunResult, harvested: dict[str, list[dict[str, Any]]]) -> None:
        for step in trace.steps:
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
