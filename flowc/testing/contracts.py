"""`OptimizerContract`: the conformance suite every optimizer passes (STYLE.md L8; the idea of
Haystack's `testing/document_store.py`). Subclass it in a test module and provide the factory:

    from flowc.testing.contracts import OptimizerContract

    class TestMyOptimizerContract(OptimizerContract):
        def make_optimizer(self, pipeline_lm, optimizer_lm, resume=False):
            return MyOptimizer(pipeline_lm=pipeline_lm, optimizer_lm=optimizer_lm, steps=2, resume=resume)

It checks, with deterministic fake models (`flowc.testing.optimizer_fakes`):
- the input CompiledPipeline is untouched (hash, params, spec dump);
- the same seed gives the same patch (two runs with fresh fakes);
- the budget holds (calls and tokens never pass it; a tiny budget stops cleanly, `stopped_by` set,
  with a valid patch);
- the patched IR verifies (`patch.apply` re-checks) and the patch is JSON round-trippable;
- resume is equivalent: a job killed after k LM calls and rerun with `resume=True` in the same run
  directory, with fresh fakes, ends with the uninterrupted run's patch, and no journaled call is
  made again;
- the validation gate reverts an update that lowers the validation metric (set
  `uses_validation_gate = False` for methods without one).

Override the fixtures (`spec_text`, `trainset`, `valset`, `metric`) and `pipeline_answer` /
`optimizer_answer` to run the suite on another pipeline or another kind of optimizer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest

import flowc
from flowc.compile import CompiledPipeline
from flowc.optimizers.base import Optimizer, ParamPatch
from flowc.optimizers.budget import Budget
from flowc.optimizers.scoring import Metric, metric_from_spec
from flowc.runtime.executor import Executor
from flowc.runtime.lm import LMClient, LMRequest
from flowc.testing.optimizer_fakes import (
    QA_SPEC,
    QA_TRAIN,
    QA_VAL,
    FunctionLM,
    KillSwitch,
    SimulatedKill,
    always_right,
    fake_optimizer_answer,
    hurting_pipeline_answer,
    qa_pipeline_answer,
)

Rows = Sequence[Mapping[str, Any]]


def comparable(patch: ParamPatch) -> dict[str, Any]:
    """A patch without what legitimately differs between equal runs (wall time)."""
    data = patch.model_dump(mode="json")
    data["budget_used"] = {k: v for k, v in data["budget_used"].items() if k != "seconds"}
    return data


def snapshot(compiled: CompiledPipeline) -> dict[str, Any]:
    """What must not change when an optimizer runs on `compiled`."""
    return {
        "hash": compiled.hash,
        "params": json.dumps({k: p.value for k, p in compiled.params.items()}, sort_keys=True, default=repr),
        "spec": json.dumps(compiled.spec.model_dump(mode="json"), sort_keys=True, default=repr),
    }


class OptimizerContract:
    """Base class of an optimizer's conformance tests (not collected itself: no `Test` prefix)."""

    #: the method reverts an update that lowers the validation score
    uses_validation_gate: ClassVar[bool] = True
    #: the seed the runs use
    seed: ClassVar[int] = 0
    #: kill points for the resume check, as fractions of the uninterrupted run's LM calls
    kill_points: ClassVar[tuple[float, ...]] = (0.0, 0.3, 0.7)

    # -- what a subclass provides ----------------------------------------------------------------

    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> Optimizer:
        raise NotImplementedError("subclasses return the optimizer under test")

    def pipeline_answer(self, request: LMRequest) -> str:
        """The fake pipeline model (a function of the request only)."""
        return qa_pipeline_answer(request)

    def optimizer_answer(self, request: LMRequest) -> str:
        """The fake critic/rewriter (a function of the request only)."""
        return fake_optimizer_answer(request)

    @pytest.fixture
    def spec_text(self) -> str:
        return QA_SPEC

    @pytest.fixture
    def compiled(self, spec_text: str) -> CompiledPipeline:
        return flowc.compile(spec_text)

    @pytest.fixture
    def trainset(self) -> Rows:
        return [dict(x) for x in QA_TRAIN]

    @pytest.fixture
    def valset(self) -> Rows:
        return [dict(x) for x in QA_VAL]

    @pytest.fixture
    def metric(self, compiled: CompiledPipeline) -> Metric:
        return metric_from_spec(compiled)

    # -- helpers -------------------------------------------------------------------------------------

    def fresh_lms(self) -> tuple[FunctionLM, FunctionLM]:
        return FunctionLM(self.pipeline_answer), FunctionLM(self.optimizer_answer)

    def run(
        self,
        compiled: CompiledPipeline,
        trainset: Rows,
        valset: Rows,
        metric: Metric,
        *,
        budget: Budget | None = None,
        run_dir: Path | None = None,
        lms: tuple[LMClient, LMClient] | None = None,
        resume: bool = False,
    ) -> ParamPatch:
        p_lm, o_lm = lms or self.fresh_lms()
        opt = self.make_optimizer(p_lm, o_lm, resume=resume)
        return opt.optimize(
            compiled,
            trainset=trainset,
            valset=valset,
            metric=metric,
            budget=budget or Budget(calls=10_000),
            seed=self.seed,
            run_dir=run_dir,
        )

    def assert_valid_patch(self, patch: ParamPatch, compiled: CompiledPipeline) -> CompiledPipeline:
        assert patch.pipeline == compiled.name
        assert patch.base_hash == compiled.hash
        assert set(patch.params) <= set(compiled.params), "a patch names only the pipeline's params"
        assert set(patch.provenance) <= set(patch.params)
        again = ParamPatch.model_validate_json(patch.model_dump_json())
        assert again == patch, "the patch must survive a JSON round trip"
        assert ParamPatch.model_validate(json.loads(json.dumps(patch.model_dump(mode="json")))) == patch
        patched = patch.apply(compiled)  # re-checked like any spec: raises if the IR does not verify
        for name, value in patch.params.items():
            assert patched.params[name].value == value
        if patch.params:
            assert patched.hash != compiled.hash
        return patched

    # -- the contract ------------------------------------------------------------------------------

    def test_input_is_untouched(
        self, compiled: CompiledPipeline, trainset: Rows, valset: Rows, metric: Metric, tmp_path: Path
    ) -> None:
        before = snapshot(compiled)
        patch = self.run(compiled, trainset, valset, metric, run_dir=tmp_path / "run")
        assert snapshot(compiled) == before
        self.assert_valid_patch(patch, compiled)

    def test_same_seed_same_patch(
        self, compiled: CompiledPipeline, trainset: Rows, valset: Rows, metric: Metric, tmp_path: Path
    ) -> None:
        first = self.run(compiled, trainset, valset, metric, run_dir=tmp_path / "a")
        second = self.run(compiled, trainset, valset, metric, run_dir=tmp_path / "b")
        assert comparable(first) == comparable(second)

    def test_patch_verifies_and_round_trips(
        self, compiled: CompiledPipeline, trainset: Rows, valset: Rows, metric: Metric, tmp_path: Path
    ) -> None:
        patch = self.run(compiled, trainset, valset, metric, run_dir=tmp_path / "run")
        assert patch.params, "the default fakes are built so that the optimizer finds an improvement"
        patched = self.assert_valid_patch(patch, compiled)
        saved = tmp_path / "patch.json"
        patch.save(saved)
        assert ParamPatch.load(saved) == patch
        # the patched pipeline runs
        result = Executor(patched, lm=FunctionLM(self.pipeline_answer)).run_sync(
            {k: valset[0][k] for k in compiled.spec.inputs}
        )
        assert result.status == "ok"

    def test_candidates_are_logged(
        self, compiled: CompiledPipeline, trainset: Rows, valset: Rows, metric: Metric, tmp_path: Path
    ) -> None:
        run_dir = tmp_path / "run"
        patch = self.run(compiled, trainset, valset, metric, run_dir=run_dir)
        rows = [json.loads(x) for x in (run_dir / "candidates.jsonl").read_text().splitlines() if x.strip()]
        assert rows, "every candidate is logged with its scores and lineage"
        for row in rows:
            assert {"id", "parent", "scores", "accepted"} <= set(row)
        if patch.params:
            assert any(r["accepted"] for r in rows)
        assert (run_dir / "job.json").exists() and (run_dir / "state.json").exists()

    @pytest.mark.parametrize("share", [0.5, 0.2])
    def test_call_budget_holds(
        self, compiled: CompiledPipeline, trainset: Rows, valset: Rows, metric: Metric, tmp_path: Path, share: float
    ) -> None:
        full_lms = self.fresh_lms()
        full = self.run(compiled, trainset, valset, metric, run_dir=tmp_path / "full", lms=full_lms)
        used = len(full_lms[0].calls) + len(full_lms[1].calls)
        assert full.budget_used["calls"] == used and full.stopped_by is None
        limit = max(1, int(used * share))
        lms = self.fresh_lms()
        budget = Budget(calls=limit)
        patch = self.run(compiled, trainset, valset, metric, budget=budget, run_dir=tmp_path / "b", lms=lms)
        made = len(lms[0].calls) + len(lms[1].calls)
        assert made <= limit and patch.budget_used["calls"] <= limit
        assert patch.stopped_by == "budget: calls"
        self.assert_valid_patch(patch, compiled)

    def test_tiny_budgets_stop_cleanly(
        self, compiled: CompiledPipeline, trainset: Rows, valset: Rows, metric: Metric, tmp_path: Path
    ) -> None:
        full_lms = self.fresh_lms()
        self.run(compiled, trainset, valset, metric, run_dir=tmp_path / "full", lms=full_lms)
        half = (full_lms[0].tokens + full_lms[1].tokens) // 2
        budgets = [
            (Budget(calls=1), "calls"),
            (Budget(calls=0), "calls"),
            (Budget(tokens=50), "tokens"),
            (Budget(tokens=half), "tokens"),
            (Budget(usd=0.0), "usd"),
            (Budget(seconds=0.0), "seconds"),
        ]
        for i, (budget, axis) in enumerate(budgets):
            lms = self.fresh_lms()
            patch = self.run(compiled, trainset, valset, metric, budget=budget, run_dir=tmp_path / f"r{i}", lms=lms)
            assert patch.stopped_by == f"budget: {axis}", budget
            made = len(lms[0].calls) + len(lms[1].calls)
            tokens = lms[0].tokens + lms[1].tokens
            if budget.calls is not None:
                assert made <= budget.calls
            if budget.tokens is not None:
                assert patch.budget_used["tokens"] <= budget.tokens and tokens <= budget.tokens
            self.assert_valid_patch(patch, compiled)

    def test_resume_is_equivalent(
        self, compiled: CompiledPipeline, trainset: Rows, valset: Rows, metric: Metric, tmp_path: Path
    ) -> None:
        full_lms = self.fresh_lms()
        full = self.run(compiled, trainset, valset, metric, run_dir=tmp_path / "full", lms=full_lms)
        total = len(full_lms[0].calls) + len(full_lms[1].calls)
        assert total >= 2
        points = sorted({min(total - 1, int(total * f)) for f in self.kill_points})
        for k in points:
            run_dir = tmp_path / f"killed-{k}"
            kill = KillSwitch(after=k)
            first = self.fresh_lms()
            with pytest.raises(SimulatedKill):
                self.run(
                    compiled,
                    trainset,
                    valset,
                    metric,
                    run_dir=run_dir,
                    lms=(kill.wrap(first[0]), kill.wrap(first[1])),
                )
            assert kill.answered == k
            second = self.fresh_lms()
            resumed = self.run(compiled, trainset, valset, metric, run_dir=run_dir, lms=second, resume=True)
            assert comparable(resumed) == comparable(full), f"killed after {k} calls"
            again = len(second[0].calls) + len(second[1].calls)
            assert again == total - k, f"killed after {k} calls: {again} new calls, {total - k} expected"

    def test_validation_gate_reverts_a_hurting_update(
        self, compiled: CompiledPipeline, trainset: Rows, valset: Rows, metric: Metric, tmp_path: Path
    ) -> None:
        if not self.uses_validation_gate:
            pytest.skip("this optimizer has no validation gate")
        good = always_right(str(valset[0][metric.target]))
        recorder = FunctionLM(good)
        ex = Executor(compiled, lm=recorder)
        inputs = [{k: e[k] for k in compiled.spec.inputs} for e in valset]
        asyncio.run(ex.run_batch(inputs, concurrency=1))
        base_keys = {r.key() for r in recorder.calls}
        hurting = FunctionLM(hurting_pipeline_answer(base_keys, inputs, good, others=self.pipeline_answer))
        run_dir = tmp_path / "run"
        patch = self.run(
            compiled, trainset, valset, metric, run_dir=run_dir, lms=(hurting, FunctionLM(self.optimizer_answer))
        )
        assert patch.params == {}, "every change lowered the validation score: none may be kept"
        assert patch.scores.get("val_after") == patch.scores.get("val_before") == 1.0
        rows = [json.loads(x) for x in (run_dir / "candidates.jsonl").read_text().splitlines() if x.strip()]
        assert rows and not any(r["accepted"] and r.get("params") for r in rows)


__all__ = ("OptimizerContract", "comparable", "snapshot")
