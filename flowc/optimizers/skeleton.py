"""The job skeleton every optimizer shares (bootstrap, TextGrad, TEP; JADE, POQD, GEPA and the DSPy
adapters build on it too).

An optimizer subclasses `StepOptimizer` and writes only its method: `step(run)` (one unit of work
that can be checkpointed), `finished(run)`, and optionally `start(run)` (default: score the
validation baseline), `fresh_state(run)` (its own state keys) and `max_steps()`. The skeleton does
the rest, the same way for every method:

- job set-up: which params train (`param_kinds`, `only`, `frozen`), the `Job` (metered, journaled
  clients; the run directory; `job.json` with `settings()` for resume checks);
- state: one JSON dict, restored on `resume=True`; the skeleton owns `step`, `values`,
  `val_base`, `val_best`, `updates`, `effective`, `provenance`;
- the step loop, with a checkpoint after every completed step;
- a budget stop: `BudgetExceeded` ends the job with the state of the last completed step;
- candidates and log rows (`run.candidate`, `run.log`, numbered with the step);
- the ParamPatch: every param whose value differs from the base, with the provenance recorded when
  it was kept (`run.keep`), the validation scores and counts, the budget used, `stopped_by`;
- progress: a `ProgressEvent` after the baseline, after every step and at the end, to `progress`.
"""

from __future__ import annotations

import copy
import dataclasses
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError, SpecErrors
from flowc.optimizers.base import AsyncOptimizer, Example, ParamPatch, Provenance, trainable_params
from flowc.optimizers.budget import Budget, BudgetExceeded
from flowc.optimizers.job import Job
from flowc.optimizers.progress import ProgressEvent, ProgressHook
from flowc.optimizers.scoring import Evaluation, Metric, Scorer
from flowc.runtime.lm import LMClient

#: dataclass fields that are not settings of the method (clients, hooks, run-time records)
NOT_RECORDED = frozenset({"pipeline_lm", "optimizer_lm", "resume", "progress", "stats"})


@dataclass
class StepReport:
    """What one step did, for its progress event (every field optional)."""

    train: float | None = None  # the minibatch score
    val: float | None = None  # the validation score of the step's candidate
    accepted: bool | None = None  # whether a change was kept (None: nothing was proposed)
    phase: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Run:
    """What a step sees: the base pipeline, the params it trains, the data, the metric, the job
    (clients, run directory) and the state. `step` is the number of the step being run."""

    def __init__(
        self,
        optimizer: str,
        compiled: CompiledPipeline,
        params: list[str],
        *,
        trainset: Sequence[Example],
        valset: Sequence[Example],
        metric: Metric,
        seed: int,
        job: Job,
        state: dict[str, Any],
    ) -> None:
        self.optimizer = optimizer
        self.compiled = compiled
        self.params = params
        self.trainset = trainset
        self.valset = valset
        self.metric = metric
        self.seed = seed
        self.job = job
        self.state = state
        self.step = int(state.get("step", 0))

    @property
    def values(self) -> dict[str, Any]:
        """The current (kept) value of every trained param."""
        values: dict[str, Any] = self.state["values"]
        return values

    @property
    def val_best(self) -> float:
        return float(self.state.get("val_best") or 0.0)

    def current(self) -> CompiledPipeline:
        """The base pipeline with the kept values."""
        return self.compiled.with_params(self.values)

    def pipeline(self, values: Mapping[str, Any]) -> CompiledPipeline | None:
        """The base pipeline with `values`, or None (logged) when that does not check (an update
        that lost a placeholder's binding, say): such a candidate is never kept."""
        try:
            return self.compiled.with_params(dict(values))
        except SpecErrors as e:
            self.log(event="rejected", reason=e.render()[:500])
            return None

    async def evaluate(
        self, compiled: CompiledPipeline, examples: Sequence[Example], *, lm: LMClient | None = None
    ) -> Evaluation:
        """Run `compiled` on `examples` through the job's pipeline client (or `lm`, e.g. a wrapper of
        `job.pipeline_lm` that changes the temperature) and score them."""
        scorer = self.job.scorer
        if lm is not None:
            scorer = Scorer(lm, tools=scorer.tools, retrievers=scorer.retrievers, concurrency=scorer.concurrency)
        return await scorer.evaluate(compiled, examples, self.metric)

    async def validate(self, values: Mapping[str, Any]) -> float | None:
        """The validation score of the base pipeline with `values` (None: it does not check)."""
        candidate = self.pipeline(values)
        if candidate is None:
            return None
        return (await self.evaluate(candidate, self.valset)).mean

    def rng(self, salt: int = 1_000_003) -> random.Random:
        """A generator seeded by the job's seed and the step: the same step draws the same way in a
        resumed job."""
        return random.Random(self.seed * salt + self.step)

    def minibatch(self, rng: random.Random, size: int) -> list[Example]:
        return [self.trainset[i] for i in rng.sample(range(len(self.trainset)), min(size, len(self.trainset)))]

    def keep(
        self,
        changes: Mapping[str, Any],
        *,
        val: float | None,
        candidate: str,
        parent: str | None = None,
        rationale: Mapping[str, str] | None = None,
    ) -> list[str]:
        """Keep a candidate: its values become current, `val` the best validation score, and each
        changed param's provenance is recorded. Returns the params whose value changed."""
        changed = [p for p, v in changes.items() if v != self.values.get(p)]
        for p in changes:
            self.values[p] = changes[p]
        for p in changed:
            self.state["provenance"][p] = {
                "step": self.step,
                "candidate": candidate,
                "parent": parent,
                "val": val,
                "rationale": str((rationale or {}).get(p, ""))[:500],
            }
        if val is not None:
            self.state["val_best"] = val
        self.state["effective"] += len(changed)
        return changed

    def candidate(self, **row: Any) -> None:
        """Log a candidate (id, parent, params, scores, accepted, ...) of this step."""
        self.job.candidate(**{"step": self.step, **row})

    def log(self, **row: Any) -> None:
        """Log an event of this step (`event=...` and what a reader needs)."""
        self.job.log(**{"step": self.step, **row})


@dataclass(kw_only=True)
class StepOptimizer(AsyncOptimizer):
    """Base of an optimizer that runs checkpointed steps. A subclass is a dataclass with its settings
    as fields (and `optimizer_lm`/`optimizer_model` when it calls a model of its own besides the
    pipeline's `pipeline_lm`), and implements `finished` and `step`. The base's fields are
    keyword-only."""

    pipeline_lm: LMClient
    only: Sequence[str] | None = None
    frozen: Sequence[str] = ()
    resume: bool = False
    progress: ProgressHook | None = field(default=None, repr=False, compare=False)

    name: ClassVar[str] = "step-optimizer"
    #: the kinds of params the method trains
    param_kinds: ClassVar[tuple[str, ...]] = ("prompt", "system")
    #: refuse a pipeline with no param of those kinds to train
    needs_params: ClassVar[bool] = True

    # -- what a subclass provides --------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """What job.json records (a resumed job must have the same): every dataclass field except
        the clients and hooks (NOT_RECORDED)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in NOT_RECORDED:
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple | list) else value
        out["only"] = list(self.only or [])
        return out

    def check(self, compiled: CompiledPipeline, params: list[str]) -> None:
        """Refuse bad settings before anything is spent (raise FlowcError)."""

    def preflight(self, compiled: CompiledPipeline, metric: Metric) -> None:
        """The checks a job makes before its first LM call, without running it (`flowc optimize`
        runs them before printing its projection, so `--dry-run` refuses what the job would)."""
        self.check(compiled, self.select_params(compiled))

    def fresh_state(self, run: Run) -> dict[str, Any]:
        """The method's own state keys for a new job (JSON values)."""
        return {}

    async def start(self, run: Run) -> None:
        """Before the first step: score the validation baseline (or 0.0 when the method does not
        validate)."""
        validates = bool(getattr(self, "validate", True))
        base = (await run.evaluate(run.compiled, run.valset)).mean if validates else 0.0
        run.state["val_base"] = run.state["val_best"] = base

    def finished(self, run: Run) -> bool:
        """Whether the job is done (called before every step; it may settle the state between
        steps, e.g. move to the next phase, without LM calls)."""
        raise NotImplementedError

    async def step(self, run: Run) -> StepReport | None:
        """One step (number `run.step`): everything it changes goes into `run.state`."""
        raise NotImplementedError

    def max_steps(self) -> int | None:
        """The most steps the job can run (for the ETA), or None."""
        return None

    def extra_scores(self, state: Mapping[str, Any]) -> dict[str, float]:
        """Scores the patch carries besides val_before, val_after, updates, effective_updates."""
        return {}

    def clients(self) -> tuple[LMClient, LMClient]:
        """The pipeline's client and the optimizer's own (the pipeline's when it has none)."""
        optimizer_lm: LMClient | None = getattr(self, "optimizer_lm", None)
        return self.pipeline_lm, optimizer_lm or self.pipeline_lm

    # -- the skeleton -------------------------------------------------------------------------------

    def select_params(self, compiled: CompiledPipeline) -> list[str]:
        params = trainable_params(compiled, self.only, self.frozen, kinds=self.param_kinds)
        if not params and self.needs_params:
            kinds = "/".join(self.param_kinds)
            raise FlowcError(
                "invalid-value",
                f"pipeline '{compiled.name}' has no trainable {kinds} param for '{self.name}' to optimize",
                hint="mark an llm node 'trainable: true', or check --only/--freeze",
            )
        return params

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
        params = self.select_params(compiled)
        self.check(compiled, params)
        pipeline_lm, optimizer_lm = self.clients()
        job = Job(
            self.name,
            compiled,
            pipeline_lm=pipeline_lm,
            optimizer_lm=optimizer_lm,
            budget=budget,
            seed=seed,
            trainset=trainset,
            valset=valset,
            settings=self.settings(),
            run_dir=run_dir,
            resume=self.resume,
        )
        state: dict[str, Any] = job.state or {
            "step": 0,
            "values": {p: compiled.params[p].value for p in params},
            "val_base": None,
            "val_best": None,
            "updates": 0,
            "effective": 0,
            "provenance": {},
        }
        run = Run(
            self.name,
            compiled,
            params,
            trainset=trainset,
            valset=valset,
            metric=metric,
            seed=seed,
            job=job,
            state=state,
        )
        if job.state is None:
            state.update(self.fresh_state(run))
        committed = copy.deepcopy(state)  # the state of the last completed step: what a budget stop keeps
        clock = _Clock()
        stopped = None
        try:
            if state["val_base"] is None:
                await self.start(run)
                job.checkpoint(state["step"], state)
                committed = copy.deepcopy(state)
                self._emit(run, "baseline", budget, clock, StepReport(val=state["val_base"]))
                clock = _Clock()
            while not self.finished(run):
                run.step = int(state["step"]) + 1
                report = await self.step(run) or StepReport()
                state["step"] = run.step
                job.checkpoint(run.step, state)
                committed = copy.deepcopy(state)
                clock.steps += 1
                self._emit(run, "step", budget, clock, report)
        except BudgetExceeded as e:
            stopped = f"budget: {e.axis}"
        finally:
            job.close()
        run.step = int(committed["step"])
        patch = self._patch(compiled, committed, job, seed, stopped)
        self._emit(run, "end", budget, clock, StepReport(), stopped_by=stopped, state=committed)
        return patch

    def _patch(
        self, compiled: CompiledPipeline, st: Mapping[str, Any], job: Job, seed: int, stopped: str | None
    ) -> ParamPatch:
        base = float(st["val_base"] or 0.0)
        best = float(st["val_best"] or 0.0)
        changed = {p: v for p, v in st["values"].items() if v != compiled.params[p].value}
        prov = {}
        for p in changed:
            rec = st["provenance"].get(p) or {"step": st["step"], "candidate": f"step{st['step']}"}
            val = rec.get("val")
            prov[p] = Provenance(
                optimizer=self.name,
                step=int(rec["step"]),
                candidate=str(rec["candidate"]),
                parent=rec.get("parent"),
                scores={"val_before": base, "val_after": float(val) if val is not None else best},
                rationale=str(rec.get("rationale", "")),
            )
        return ParamPatch(
            pipeline=compiled.name,
            base_hash=compiled.hash,
            optimizer=self.name,
            seed=seed,
            params=changed,
            provenance=prov,
            scores={
                "val_before": base,
                "val_after": best,
                "updates": float(st["updates"]),
                "effective_updates": float(st["effective"]),
                **self.extra_scores(st),
            },
            budget_used=job.meter.used(),
            stopped_by=stopped,
        )

    def _emit(
        self,
        run: Run,
        kind: str,
        budget: Budget,
        clock: _Clock,
        report: StepReport,
        *,
        stopped_by: str | None = None,
        state: Mapping[str, Any] | None = None,
    ) -> None:
        if self.progress is None:
            return
        st = state or run.state
        most = self.max_steps()
        eta = None
        if most is not None and clock.steps:
            eta = max(0, most - run.step) * clock.elapsed() / clock.steps
        self.progress(
            ProgressEvent(
                optimizer=self.name,
                kind=kind,
                step=run.step,
                max_steps=most,
                spent=run.job.meter.used(),
                budget=budget,
                elapsed_s=run.job.meter.seconds,
                eta_s=eta,
                phase=report.phase,
                train=report.train,
                val=report.val,
                val_best=st.get("val_best"),
                accepted=report.accepted,
                stopped_by=stopped_by,
                details=report.details,
            )
        )


class _Clock:
    """Steps completed and time spent in this session (a resumed job's ETA uses its own pace)."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.steps = 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started


__all__ = ("NOT_RECORDED", "Run", "StepOptimizer", "StepReport")
