"""The shared job skeleton (`StepOptimizer`): a toy method written on it passes the optimizer
contract with nothing but its step; progress events; the budget stop; the shared builder."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest

import flowc
from flowc.errors import FlowcError
from flowc.optimizers.budget import Budget
from flowc.optimizers.factory import Clients, make_optimizer, parse_settings
from flowc.optimizers.progress import ProgressEvent, plain_progress, render_line
from flowc.optimizers.scoring import accept, metric_from_spec
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.runtime.lm import LMClient, LMRequest, chat
from flowc.testing.contracts import OptimizerContract
from flowc.testing.optimizer_fakes import (
    HINT,
    QA_SPEC,
    QA_TRAIN,
    QA_VAL,
    FunctionLM,
    between,
    fake_optimizer_answer,
    qa_pipeline_answer,
)


@dataclass
class Prepend(StepOptimizer):
    """A toy method: each step asks the optimizer model to rewrite one prompt (round robin) and keeps
    the rewrite if validation does not drop. Everything else comes from the skeleton."""

    optimizer_lm: LMClient
    optimizer_model: str = "fake/optimizer"
    steps: int = 2

    name: ClassVar[str] = "prepend"
    param_kinds: ClassVar[tuple[str, ...]] = ("prompt",)

    def finished(self, run: Run) -> bool:
        return int(run.state["step"]) >= self.steps

    def max_steps(self) -> int | None:
        return self.steps

    async def step(self, run: Run) -> StepReport:
        param = run.params[(run.step - 1) % len(run.params)]
        req = LMRequest(
            model=self.optimizer_model,
            messages=chat("Reply with <PROMPT>...</PROMPT>.", f"<CURRENT>{run.values[param]}</CURRENT>"),
            temperature=0.0,
            node=f"prepend:{param}",
        )
        new = between((await run.job.optimizer_lm.complete(req)).text, "<PROMPT>", "</PROMPT>") or ""
        run.state["updates"] += 1
        val = await run.validate({**run.values, param: new})
        kept = val is not None and accept(val, run.val_best)
        if kept:
            run.keep({param: new}, val=val, candidate=f"step{run.step}", rationale={param: "the rewrite"})
        run.candidate(id=f"step{run.step}", parent="base", params={param: new}, scores={"val": val}, accepted=kept)
        return StepReport(val=val, accepted=kept)


class TestPrependContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> Prepend:
        return Prepend(pipeline_lm=pipeline_lm, optimizer_lm=optimizer_lm, resume=resume)


def _run(tmp_path: Path, budget: Budget | None = None, **kw: Any) -> tuple[Any, list[ProgressEvent]]:
    events: list[ProgressEvent] = []
    compiled = flowc.compile(QA_SPEC)
    opt = Prepend(
        pipeline_lm=FunctionLM(qa_pipeline_answer),
        optimizer_lm=FunctionLM(fake_optimizer_answer),
        progress=events.append,
        **kw,
    )
    patch = opt.optimize(
        compiled,
        trainset=list(QA_TRAIN),
        valset=list(QA_VAL),
        metric=metric_from_spec(compiled),
        budget=budget or Budget(calls=100),
        seed=0,
        run_dir=tmp_path / "run",
    )
    return patch, events


def test_progress_events_per_step(tmp_path: Path) -> None:
    patch, events = _run(tmp_path, steps=3)
    assert [e.kind for e in events] == ["baseline", "step", "step", "step", "end"]
    assert [e.step for e in events] == [0, 1, 2, 3, 3]
    assert all(e.max_steps == 3 and e.optimizer == "prepend" for e in events)
    # step 1 rewrites the draft (no gain, kept by the >= gate), step 2 the answer step (right from then on)
    assert [e.val for e in events[:3]] == [0.0, 0.0, 1.0] and events[2].accepted is True
    calls = [e.spent["calls"] for e in events]
    assert calls == sorted(calls) and calls[-1] == patch.budget_used["calls"]
    assert events[1].eta_s is not None and events[-2].eta_s == 0.0
    assert events[-1].stopped_by is None and events[-1].val_best == 1.0
    assert events[1].budget_share() == {"calls": events[1].spent["calls"] / 100}
    line = render_line(events[2])
    assert re.match(r"prepend step 2/3 · val 1\.00 kept · best 1\.00 · \d+ calls, \d+ tok / 100 calls · \d+s", line)
    out = io.StringIO()
    plain_progress(out)(events[-1])
    assert out.getvalue().startswith("prepend done after 3 step(s)")


def test_patch_has_provenance_from_keep(tmp_path: Path) -> None:
    patch, _ = _run(tmp_path, steps=2)
    assert patch.params == {
        "draft.prompt": f"{HINT} Think about: {{{{question}}}}",
        "answer.prompt": f"{HINT} Notes: {{{{notes}}}} Q: {{{{question}}}}",
    }
    prov = patch.provenance["answer.prompt"]
    assert (prov.step, prov.candidate, prov.rationale) == (2, "step2", "the rewrite")
    assert prov.scores == {"val_before": 0.0, "val_after": 1.0}
    assert patch.scores == {"val_before": 0.0, "val_after": 1.0, "updates": 2.0, "effective_updates": 2.0}


def test_a_budget_stop_keeps_the_last_completed_step(tmp_path: Path) -> None:
    full, _ = _run(tmp_path / "full", steps=2)
    # the baseline makes 4 calls, each step 5 (the rewrite, 4 validation calls): 12 stops inside step 2
    patch, events = _run(tmp_path / "cut", steps=2, budget=Budget(calls=12))
    assert patch.stopped_by == "budget: calls" and events[-1].stopped_by == "budget: calls"
    assert list(patch.params) == ["draft.prompt"] and patch.params["draft.prompt"] == full.params["draft.prompt"]
    assert patch.scores["effective_updates"] == 1.0 and events[-1].step == 1


def test_settings_are_every_field_but_clients_and_hooks() -> None:
    opt = Prepend(pipeline_lm=FunctionLM(str), optimizer_lm=FunctionLM(str), progress=print, only=("x",))
    assert opt.settings() == {"optimizer_model": "fake/optimizer", "steps": 2, "only": ["x"], "frozen": []}


def test_make_optimizer_and_settings() -> None:
    clients = Clients(FunctionLM(str), FunctionLM(str), "fake/critic")
    events: list[ProgressEvent] = []
    tep = make_optimizer("tep", clients, steps=4, batch_size=2, settings={"beta0": 0.2}, progress=events.append)
    assert (tep.t_free, tep.t_nudge, tep.batch_size, tep.beta0) == (4, 4, 2, 0.2)
    assert tep.optimizer_lm is clients.optimizer and tep.optimizer_model == "fake/critic"
    assert tep.progress == events.append
    boot = make_optimizer("bootstrap", clients, steps=3, settings={"max_demos": 1})
    assert boot.pipeline_lm is clients.pipeline and boot.max_demos == 1
    with pytest.raises(FlowcError, match="no setting 'pipeline_lm'"):
        make_optimizer("tep", clients, settings={"pipeline_lm": None})
    assert parse_settings("tep", ["beta0=0.1", "actor-temperature=0.2,0.4", "validate=false"]) == {
        "beta0": 0.1,
        "actor_temperature": (0.2, 0.4),
        "validate": False,
    }
