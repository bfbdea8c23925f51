"""The environment of one optimization job: metered and journaled LM clients, a scorer, the run
directory, and resume state. Optimizers build one in `optimize()` and use nothing else to reach models."""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.optimizers.budget import Budget, Meter, MeteredLM
from flowc.optimizers.journal import JournaledLM
from flowc.optimizers.rundir import RunDir, truncate_after
from flowc.optimizers.scoring import Scorer
from flowc.runtime.lm import LMClient
from flowc.runtime.tools import ToolRegistry


def data_hash(rows: Sequence[Mapping[str, Any]]) -> str:
    blob = json.dumps(list(rows), sort_keys=True, ensure_ascii=False, default=repr)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


class Job:
    """Wires one job. `pipeline_lm` answers the pipeline's own calls, `optimizer_lm` the optimizer's
    (critic, gradient, rewrite); both are charged to one budget and journaled for resume."""

    def __init__(
        self,
        optimizer: str,
        compiled: CompiledPipeline,
        *,
        pipeline_lm: LMClient,
        optimizer_lm: LMClient,
        budget: Budget,
        seed: int,
        trainset: Sequence[Mapping[str, Any]],
        valset: Sequence[Mapping[str, Any]],
        settings: Mapping[str, Any],
        run_dir: Path | None = None,
        resume: bool = False,
        tools: ToolRegistry | None = None,
        concurrency: int = 1,
    ) -> None:
        self.optimizer = optimizer
        self.rundir = RunDir(run_dir or tempfile.mkdtemp(prefix=f"flowc-{optimizer}-"))
        self.rundir.check_job(
            {
                "optimizer": optimizer,
                "pipeline": compiled.name,
                "artifact": compiled.hash,
                "seed": seed,
                "budget": [budget.calls, budget.tokens, budget.usd, budget.seconds],
                "train": data_hash(trainset),
                "val": data_hash(valset),
                "settings": dict(settings),
            },
            resume=resume,
        )
        self.meter = Meter(budget)
        self._journals = [
            JournaledLM(MeteredLM(pipeline_lm, self.meter), self.rundir.path / "journal-pipeline.jsonl"),
            JournaledLM(MeteredLM(optimizer_lm, self.meter), self.rundir.path / "journal-optimizer.jsonl"),
        ]
        for j in self._journals:  # what earlier sessions of this job already spent
            calls, tokens, usd = j.totals()
            self.meter.calls += calls
            self.meter.tokens += tokens
            self.meter.usd += usd
        self.pipeline_lm: LMClient = self._journals[0]
        self.optimizer_lm: LMClient = self._journals[1]
        self.scorer = Scorer(self.pipeline_lm, tools=tools, concurrency=concurrency)
        self.state = self.rundir.load_state() if resume else None
        if self.state is not None:
            self.meter.elapsed_before = float(self.state.get("_seconds", 0.0))
            for j, n in zip(self._journals, self.state.get("_journal_entries", [0, 0]), strict=False):
                j.consume_first(int(n))
            step = int(self.state.get("_step", 0))
            truncate_after(self.rundir.path / "candidates.jsonl", step)
            truncate_after(self.rundir.path / "log.jsonl", step)

    @property
    def replayed_calls(self) -> int:
        return sum(j.replayed for j in self._journals)

    def checkpoint(self, step: int, state: Mapping[str, Any]) -> None:
        """Save the optimizer's state after completed step `step`."""
        self.rundir.save_state(
            {
                **state,
                "_step": step,
                "_seconds": self.meter.seconds,
                "_used": self.meter.used(),
                "_journal_entries": [j.entries for j in self._journals],
            }
        )

    def candidate(self, **row: Any) -> None:
        self.rundir.candidate(**row)

    def log(self, **row: Any) -> None:
        self.rundir.log(**row)

    def close(self) -> None:
        for j in self._journals:
            j.close()
