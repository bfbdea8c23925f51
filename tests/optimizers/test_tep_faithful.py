"""TEP's faithfulness fixes (issue 12 §2), each on scripted models: rounds until validation
plateaus (so β anneals), system prompts train, failures are tied to their inputs, the default gate's
cost is linear in depth, and only what an update receives counts as its feedback."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import flowc
from flowc.optimizers.budget import Budget
from flowc.optimizers.rundir import RunDir
from flowc.optimizers.scoring import metric_from_spec
from flowc.optimizers.tep import TEP
from flowc.runtime.lm import LMClient, LMRequest, LMResponse
from flowc.testing.generators import deep_chain
from flowc.testing.optimizer_fakes import (
    HINT,
    QA_SPEC,
    QA_TRAIN,
    QA_VAL,
    Answer,
    FunctionLM,
    between,
    capital_questions,
    chain_pipeline_answer,
    fake_optimizer_answer,
    qa_pipeline_answer,
    request_text,
)


def always_suggest(request: LMRequest) -> str:
    """A critic that always has one suggestion; updates put the hint in front of the prompt."""
    if "local critic" in request.messages[0].content:
        return json.dumps({"scores": {"clarity": 3}, "suggestions": [f"Add: {HINT}"], "no_further_improvement": False})
    return fake_optimizer_answer(request)


def _run(
    optimizer_answer: Answer,
    tmp_path: Path,
    *,
    spec: str = QA_SPEC,
    pipeline_answer: Answer = qa_pipeline_answer,
    train: Sequence[Mapping[str, Any]] = QA_TRAIN,
    val: Sequence[Mapping[str, Any]] = QA_VAL,
    pipeline_lm: LMClient | None = None,
    **kw: Any,
) -> tuple[Any, FunctionLM, FunctionLM, TEP]:
    compiled = flowc.compile(spec)
    p_lm, o_lm = FunctionLM(pipeline_answer), FunctionLM(optimizer_answer)
    tep = TEP(pipeline_lm=pipeline_lm or p_lm, optimizer_lm=o_lm, optimizer_model="fake/opt", **kw)
    patch = tep.optimize(
        compiled,
        trainset=list(train),
        valset=list(val),
        metric=metric_from_spec(compiled),
        budget=Budget(calls=20_000),
        seed=0,
        run_dir=tmp_path / "run",
    )
    return patch, p_lm, o_lm, tep


def _log(tmp_path: Path) -> list[dict[str, Any]]:
    return RunDir(tmp_path / "run").logs()


def test_rounds_run_until_validation_plateaus_so_beta_anneals(tmp_path: Path) -> None:
    """Notre-Dame is answered right once the answer step's prompt says "capital" once, Roland-Garros
    once it says it twice: the first round gains twice, the second gains nothing and ends the job."""

    def counting(request: LMRequest) -> str:
        text = request_text(request)
        if "Think about:" in text and "Notes:" not in text:
            return "notes"
        need = 2 if "Roland-Garros" in text else 1
        return "Paris" if text.count("capital") >= need else "dunno"

    patch, _, _, tep = _run(always_suggest, tmp_path, pipeline_answer=counting, t_free=1, t_nudge=1, batch_size=2)
    assert [(s["round"], s["phase"]) for s in tep.stats] == [(0, "free"), (0, "nudged"), (1, "free"), (1, "nudged")]
    betas = [r["beta"] for r in _log(tmp_path) if r["event"] == "proposal" and r["phase"] == "nudged"]
    assert betas == pytest.approx([0.3, 0.3, 0.27, 0.27])  # β0, then β0·ρ in the second round
    assert patch.scores["val_before"] == 0.0 and patch.scores["val_after"] == 1.0
    assert patch.params["answer.prompt"].count("capital") == 2  # the second round's third hint: no gain, refused


def test_patience_and_the_round_cap(tmp_path: Path) -> None:
    _, _, _, tep = _run(always_suggest, tmp_path, t_free=1, t_nudge=1, validate=False, rounds=4, patience=2)
    assert [s["round"] for s in tep.stats] == [0, 0, 1, 1]  # no validation signal: two flat rounds
    _, _, _, tep = _run(always_suggest, tmp_path / "cap", t_free=1, t_nudge=1, validate=False, rounds=1, patience=9)
    assert [s["round"] for s in tep.stats] == [0, 0]


SYSTEM_SPEC = QA_SPEC.replace(
    '    prompt: "Notes: {{notes}} Q: {{question}}"',
    '    system: "Be brief."\n    prompt: "Notes: {{notes}} Q: {{question}}"',
)


def test_system_prompts_are_trained(tmp_path: Path) -> None:
    patch, _, o_lm, _ = _run(always_suggest, tmp_path, spec=SYSTEM_SPEC, t_free=1, t_nudge=0, validate=False)
    assert patch.params["answer.system"] == f"{HINT} Be brief."
    critic = next(r for r in o_lm.calls if r.node == "tep:critic:answer.system").messages[-1].content
    assert "<ROLE> the system prompt of the 'answer' step (answer) </ROLE>" in critic
    assert "<PROMPT>\nBe brief.\n</PROMPT>" in critic


def test_each_failure_in_the_task_message_has_its_input(tmp_path: Path) -> None:
    _, _, o_lm, _ = _run(always_suggest, tmp_path, t_free=0, t_nudge=1, validate=False, batch_size=6)
    nudged = [r.messages[-1].content for r in o_lm.calls if "<TASK_OBJECTIVE>" in r.messages[-1].content]
    assert nudged
    task = between(nudged[0], "<TASK_OBJECTIVE>", "</TASK_OBJECTIVE>") or ""
    failures = [line for line in task.splitlines() if line.startswith("- input ")]
    assert len(failures) == 2  # max_failures
    assert (
        failures[0].startswith('- input {"question": "')
        and 'expected "Paris", the pipeline answered "dunno"' in (failures[0])
    )
    asked = {json.loads(line[len("- input ") : line.index("}: expected") + 1])["question"] for line in failures}
    assert asked <= {x["question"] for x in QA_TRAIN if "capital" not in x["question"].lower()}


class Counting:
    """Counts the pipeline calls made while the gate runs (the requests for validation questions)."""

    def __init__(self, val: Sequence[Mapping[str, Any]]) -> None:
        self.inner = FunctionLM(chain_pipeline_answer)
        self.needles = [x["question"] for x in val]

    async def complete(self, request: LMRequest) -> LMResponse:
        return await self.inner.complete(request)

    def validation_calls(self) -> int:
        return sum(any(n in request_text(r) for n in self.needles) for r in self.inner.calls)


@pytest.mark.parametrize("gate", ["joint", "per_node"])
def test_the_default_gate_costs_linear_in_depth(tmp_path: Path, gate: str) -> None:
    rows = capital_questions()
    train, val = rows[:6], rows[6:8]
    calls = {}
    for depth in (2, 8):
        lm = Counting(val)
        _run(
            always_suggest,
            tmp_path / f"{gate}{depth}",
            spec=deep_chain(depth, model_id="fake/model"),
            pipeline_lm=lm,
            train=train,
            val=val,
            t_free=1,
            t_nudge=0,
            rounds=1,
            gate=gate,
        )
        calls[depth] = lm.validation_calls()
    # baseline + gate passes, each a run of every node on every validation question
    if gate == "joint":  # one joint pass (every edit helps): 2 passes at any depth
        assert calls == {2: 2 * 2 * 2, 8: 2 * 8 * 2}
    else:  # each of the `depth` edits alone, then together: quadratic
        assert calls == {2: (1 + 2 + 1) * 2 * 2, 8: (1 + 8 + 1) * 8 * 2}
    assert TEP(pipeline_lm=lm, optimizer_lm=lm, optimizer_model="m").gate == "joint"


def test_only_what_the_update_receives_counts_as_feedback(tmp_path: Path) -> None:
    _, _, o_lm, tep = _run(always_suggest, tmp_path, t_free=1, t_nudge=1, validate=False, rounds=1)
    free, nudged = tep.stats
    assert free["feedback"]["draft.prompt"] == [f"Add: {HINT}"]
    # nudged: the carried free-phase suggestion and the nudged critic's; not the task message
    assert nudged["feedback"]["draft.prompt"] == [f"Add: {HINT}", f"Add: {HINT}"]
    assert nudged["feedback_chars"]["draft.prompt"] == 2 * len(f"Add: {HINT}")
    update = next(r for r in o_lm.calls if r.node == "tep:update:draft.prompt" and "weighed" in request_text(r))
    assert "<TASK_OBJECTIVE>" not in request_text(update)
