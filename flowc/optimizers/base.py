"""The optimizer contract.

Every optimizer implements

    optimize(compiled, *, trainset, valset, metric, budget, seed, run_dir=None) -> ParamPatch

and must:
- never mutate its input (CompiledPipeline is immutable; work on `with_params` copies);
- be deterministic for a fixed seed under a scripted LM;
- respect the budget (calls, tokens, dollars, seconds), counted at the model client for pipeline and
  optimizer calls alike (`MeteredLM`), and stop cleanly with its best result when it runs out;
- log every candidate with its scores and lineage, and checkpoint after every completed step in
  `run_dir`, so a killed job rerun with the same run_dir resumes and ends with the same patch;
- accept an update only if the validation metric does not drop, where the method says so.

`flowc.testing.contracts.OptimizerContract` checks these properties for any optimizer.
A ParamPatch is plain JSON: param name → new value, with provenance per param.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.budget import Budget
from flowc.optimizers.scoring import Metric

Example = Mapping[str, Any]


class Provenance(BaseModel):
    """Where a param's new value came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    optimizer: str
    step: int
    candidate: str
    parent: str | None = None
    scores: dict[str, float] = Field(default_factory=dict)
    rationale: str = ""


class ParamPatch(BaseModel):
    """New values for some params of one pipeline, with their provenance. JSON all the way down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    pipeline: str
    base_hash: str
    optimizer: str
    seed: int
    params: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Provenance] = Field(default_factory=dict)
    scores: dict[str, float] = Field(default_factory=dict)  # e.g. val_before, val_after
    budget_used: dict[str, float] = Field(default_factory=dict)
    stopped_by: str | None = None  # "budget: calls" etc. when the budget ended the job

    def apply(self, compiled: CompiledPipeline) -> CompiledPipeline:
        """The patched pipeline (re-checked like any spec)."""
        if compiled.name != self.pipeline:
            raise FlowcError(
                "invalid-value",
                f"this patch is for pipeline '{self.pipeline}', not '{compiled.name}'",
                hint="apply it to the pipeline it was made for",
            )
        return compiled.with_params(self.params) if self.params else compiled

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.model_dump_json(indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> ParamPatch:
        try:
            return cls.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as e:
            raise FlowcError("artifact-invalid", f"cannot read patch '{path}': {e}") from None


@runtime_checkable
class Optimizer(Protocol):
    name: ClassVar[str]

    def optimize(
        self,
        compiled: CompiledPipeline,
        *,
        trainset: Sequence[Example],
        valset: Sequence[Example],
        metric: Metric,
        budget: Budget,
        seed: int,
        run_dir: Path | None = None,
    ) -> ParamPatch: ...


class AsyncOptimizer:
    """Gives an optimizer written as `async optimize_async(...)` the contract's blocking `optimize`."""

    async def optimize_async(
        self,
        compiled: CompiledPipeline,
        *,
        trainset: Sequence[Example],
        valset: Sequence[Example],
        metric: Metric,
        budget: Budget,
        seed: int,
        run_dir: Path | None = None,
    ) -> ParamPatch:
        raise NotImplementedError

    def optimize(
        self,
        compiled: CompiledPipeline,
        *,
        trainset: Sequence[Example],
        valset: Sequence[Example],
        metric: Metric,
        budget: Budget,
        seed: int,
        run_dir: Path | None = None,
    ) -> ParamPatch:
        return asyncio.run(
            self.optimize_async(
                compiled, trainset=trainset, valset=valset, metric=metric, budget=budget, seed=seed, run_dir=run_dir
            )
        )


def trainable_params(
    compiled: CompiledPipeline,
    only: Sequence[str] | None = None,
    frozen: Sequence[str] = (),
    kinds: Sequence[str] = ("prompt", "system", "demos"),
) -> list[str]:
    """The params an optimizer may change: trainable in the spec, of the given kinds, restricted to
    `only` (param or node names) and minus `frozen` (param or node names)."""
    names = []
    for name, p in compiled.params.items():
        if not p.trainable or p.kind not in kinds:
            continue
        node = p.node or ""
        if only and name not in only and node not in only:
            continue
        if name in frozen or node in frozen:
            continue
        names.append(name)
    if only:
        known = set(compiled.params) | {p.node for p in compiled.params.values() if p.node}
        unknown = [x for x in only if x not in known]
        if unknown:
            raise FlowcError(
                "unknown-name",
                f"no param or node '{unknown[0]}' to train",
                hint=f"params: {', '.join(compiled.params)}",
            )
    return names
