"""TextGrad: the optimizer contract, then the mechanics of backward and TGD under fake models."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import flowc
from flowc.optimizers.base import ParamPatch
from flowc.optimizers.budget import Budget
from flowc.optimizers.rundir import RunDir
from flowc.optimizers.scoring import metric_from_spec
from flowc.optimizers.textgrad import TextGrad
from flowc.optimizers.textgrad.graph import Gradient, Var
from flowc.runtime.lm import LMClient, LMRequest
from flowc.testing.contracts import OptimizerContract
from flowc.testing.optimizer_fakes import (
    HINT,
    QA_SPEC,
    QA_TRAIN,
    QA_VAL,
    Answer,
    FunctionLM,
    always_right,
    fake_optimizer_answer,
    qa_pipeline_answer,
)


class TestTextGradContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> TextGrad:
        return TextGrad(
            pipeline_lm=pipeline_lm,
            optimizer_lm=optimizer_lm,
            optimizer_model="fake/optimizer",
            steps=3,
            batch_size=2,
            resume=resume,
        )


# -- mechanics ------------------------------------------------------------------------------------------

LONG_PROMPT = (
    "Read the question with care, think about which city it asks for, weigh every clue it gives, "
    "and only then write down the notes that will help the next step answer it: {{question}}"
)


def _spec(draft_prompt: str = "Think about: {{question}}") -> flowc.CompiledPipeline:
    return flowc.compile(QA_SPEC.replace('"Think about: {{question}}"', json.dumps(draft_prompt)))


def _run(
    compiled: flowc.CompiledPipeline,
    optimizer_answer: Answer = fake_optimizer_answer,
    *,
    tmp_path: Path,
    pipeline_answer: Answer = qa_pipeline_answer,
    train: Sequence[Mapping[str, Any]] = QA_TRAIN[1:2],
    **kw: Any,
) -> tuple[ParamPatch, FunctionLM, FunctionLM, TextGrad]:
    p_lm, o_lm = FunctionLM(pipeline_answer), FunctionLM(optimizer_answer)
    settings: dict[str, Any] = {"steps": 1, "batch_size": 1, "validate": False} | kw
    tg = TextGrad(pipeline_lm=p_lm, optimizer_lm=o_lm, optimizer_model="fake/opt", **settings)
    patch = tg.optimize(
        compiled,
        trainset=list(train),
        valset=list(QA_VAL),
        metric=metric_from_spec(compiled),
        budget=Budget(calls=1000),
        seed=0,
        run_dir=tmp_path / "run",
    )
    return patch, p_lm, o_lm, tg


def _log(tmp_path: Path) -> list[dict[str, Any]]:
    return RunDir(tmp_path / "run").logs()


def test_backward_order_and_prompts(tmp_path: Path) -> None:
    patch, _, o_lm, _ = _run(_spec(LONG_PROMPT), tmp_path=tmp_path)
    nodes = [r.node for r in o_lm.calls]
    # answer step first (its prompt, then the draft output it read), then the draft step, then TGD
    assert nodes[:3] == [
        "textgrad:backward:param:answer.prompt",
        nodes[1],
        "textgrad:backward:param:draft.prompt",
    ]
    assert nodes[1].startswith("textgrad:backward:ex0/step")
    assert sorted(nodes[3:]) == ["textgrad:update:answer.prompt", "textgrad:update:draft.prompt"]
    base, chain = o_lm.calls[0].messages[-1].content, o_lm.calls[2].messages[-1].content
    # BASE for the evaluated output: the evaluation, no downstream feedback
    assert "<EVALUATION>" in base and "exact_match = 0 (wrong)" in base and '"Paris"' in base
    assert "feedback on the output" not in base
    # CHAIN upstream: the feedback the draft's output got downstream is the objective
    assert "<EVALUATION>" not in chain
    downstream = fake_optimizer_answer(o_lm.calls[1])
    assert f"feedback on the output:\n{downstream}</OBJECTIVE_FUNCTION>" in chain
    # the variable is shown whole (not first/last ten words: quirk Q2), in backward and update prompts
    assert f"<VARIABLE> {LONG_PROMPT} </VARIABLE>" in chain
    update = next(r for r in o_lm.calls if r.node == "textgrad:update:draft.prompt").messages[-1].content
    assert f"<VARIABLE>\n{LONG_PROMPT}\n</VARIABLE>" in update
    assert patch.params["draft.prompt"] == f"{HINT} {LONG_PROMPT}"
    assert o_lm.calls[0].messages[0].role == "system" and "feedback engine" in o_lm.calls[0].messages[0].content


def test_whitespace_and_duplicate_feedback_is_dropped() -> None:
    var = Var("v", "role", "value", True, "param")
    for text in ["", "\n", "  ", "fix X", "fix X ", "fix Y"]:
        var.gradients.append(Gradient(text, "", "out", "src"))
    assert var.gradient_text() == "fix X\nfix Y"  # Q1: "\n" from empty sum gradients is not feedback
    tg = TextGrad(pipeline_lm=FunctionLM(qa_pipeline_answer), optimizer_lm=FunctionLM(str), optimizer_model="m")
    kept = tg._select(var.gradients, random.Random(0))
    assert [g.text for g in kept] == ["fix X", "fix Y"]


def test_whitespace_feedback_sends_no_update(tmp_path: Path) -> None:
    def critic(request: LMRequest) -> str:
        return "   \n" if request.node and "backward" in request.node else fake_optimizer_answer(request)

    patch, _, o_lm, _ = _run(flowc.compile(QA_SPEC), critic, tmp_path=tmp_path)
    nodes = [r.node or "" for r in o_lm.calls]
    # the draft step's output got only whitespace: no chain call for the draft, no update at all
    assert nodes == ["textgrad:backward:param:answer.prompt", nodes[1]] and "update" not in "".join(nodes)
    assert patch.params == {}


def test_feedback_caps_length_and_count_with_provenance(tmp_path: Path) -> None:
    seen: list[str] = []

    def critic(request: LMRequest) -> str:
        if "<IMPROVED_VARIABLE>" in request.messages[0].content:
            return fake_optimizer_answer(request)
        seen.append(request.prompt_text)
        return f"Feedback number {len(seen)}: " + "x" * 500  # distinct and long

    _patch, _, o_lm, tg = _run(
        flowc.compile(QA_SPEC),
        critic,
        tmp_path=tmp_path,
        pipeline_answer=lambda r: "dunno",  # every example wrong: each gives feedback
        train=QA_TRAIN,
        batch_size=4,
        max_feedback_chars=120,
        max_gradients=2,
    )
    update = next(r for r in o_lm.calls if r.node == "textgrad:update:answer.prompt").messages[-1].content
    blocks = re.findall(r"<FEEDBACK> (.*?) </FEEDBACK>", update, re.S)
    assert len(blocks) == 2  # 4 examples gave 4 pieces; 2 kept (seeded sample)
    for text in blocks:
        assert len(text) <= 120 + len(" (...) ") and " (...) " in text
    events = [e for e in _log(tmp_path) if e["event"] == "update" and e["param"] == "answer.prompt"]
    assert len(events[0]["gradients"]) == 2
    assert all("->" in src for src in events[0]["gradients"])  # provenance: which step's feedback it was
    step = next(e for e in _log(tmp_path) if e["event"] == "step")
    assert step["gradients"]["param:answer.prompt"] == 4  # what was dropped is still accounted for
    assert tg.stats[0]["feedback_chars"]["answer.prompt"] <= 2 * (120 + len(" (...) "))


def test_momentum_and_gradient_memory_are_rendered(tmp_path: Path) -> None:
    def never(request: LMRequest) -> str:  # stays wrong, so the second step has feedback too
        return "dunno"

    _patch, _, o_lm, _ = _run(
        flowc.compile(QA_SPEC), tmp_path=tmp_path, pipeline_answer=never, steps=2, momentum_window=2, gradient_memory=2
    )
    updates = [r.messages[-1].content for r in o_lm.calls if r.node == "textgrad:update:answer.prompt"]
    assert len(updates) == 2
    assert "<PAST_ITERATIONS>" not in updates[0] and "<FEEDBACK-1>" not in updates[0]
    second = updates[1]
    assert "<PAST_ITERATIONS>" in second and "Notes: {{notes}} Q: {{question}}" in second.split("<PAST_ITERATIONS>")[1]
    assert "<FEEDBACK-1>" in second and "The answer should be a city" in second.split("<FEEDBACK-1>")[1]
    # off when asked
    _, _, o_lm2, _ = _run(
        flowc.compile(QA_SPEC),
        tmp_path=tmp_path / "off",
        pipeline_answer=never,
        steps=2,
        momentum_window=0,
        gradient_memory=0,
    )
    last = [r.messages[-1].content for r in o_lm2.calls if r.node == "textgrad:update:answer.prompt"][-1]
    assert "<PAST_ITERATIONS>" not in last and "<FEEDBACK-1>" not in last


def test_missing_tags_get_one_repair_request(tmp_path: Path) -> None:
    asked: list[str] = []

    def critic(request: LMRequest) -> str:
        if request.node == "textgrad:update:answer.prompt":
            asked.append(request.messages[-1].content)
            if len(asked) == 1:
                return "Here is a better prompt: Name the city."
        return fake_optimizer_answer(request)

    patch, _, _, _ = _run(flowc.compile(QA_SPEC), critic, tmp_path=tmp_path)
    assert len(asked) == 2 and "had no <IMPROVED_VARIABLE>...</IMPROVED_VARIABLE> tags" in asked[1]
    assert patch.params["answer.prompt"].startswith(HINT)


def test_unreadable_update_keeps_the_value(tmp_path: Path) -> None:
    def critic(request: LMRequest) -> str:
        return "no tags, ever" if request.node == "textgrad:update:answer.prompt" else fake_optimizer_answer(request)

    patch, _, o_lm, _ = _run(flowc.compile(QA_SPEC), critic, tmp_path=tmp_path)
    assert "answer.prompt" not in patch.params and "draft.prompt" in patch.params
    assert [r.node for r in o_lm.calls].count("textgrad:update:answer.prompt") == 2
    assert any(e["event"] == "update-unreadable" for e in _log(tmp_path))


def test_placeholder_constraint_is_in_the_update_prompt(tmp_path: Path) -> None:
    _, _, o_lm, _ = _run(flowc.compile(QA_SPEC), tmp_path=tmp_path, constraints=["Stay under 50 words."])
    update = next(r for r in o_lm.calls if r.node == "textgrad:update:answer.prompt").messages[-1].content
    cons = update.split("<CONSTRAINTS>")[1].split("</CONSTRAINTS>")[0]
    assert "Constraint 1: Stay under 50 words." in cons
    assert "Constraint 2: Keep every placeholder exactly as written: {{notes}}, {{question}}" in cons


@pytest.mark.parametrize("validate", [False, True])
def test_an_update_that_drops_a_placeholder_is_rejected(tmp_path: Path, validate: bool) -> None:
    def critic(request: LMRequest) -> str:
        if request.node == "textgrad:update:answer.prompt":
            return f"<IMPROVED_VARIABLE>{HINT} Answer: {{{{question}}}}</IMPROVED_VARIABLE>"  # lost {{notes}}
        return fake_optimizer_answer(request)

    patch, _, _, _ = _run(flowc.compile(QA_SPEC), critic, tmp_path=tmp_path, validate=validate)
    assert "answer.prompt" not in patch.params
    # the draft's hint is kept without the gate; with it, it ties on validation and makes the prompt
    # longer, which the gate refuses
    assert ("draft.prompt" in patch.params) is not validate
    rejected = [e for e in _log(tmp_path) if e["event"] == "rejected"]
    assert rejected and "notes" in rejected[0]["reason"]


def test_an_update_that_breaks_the_spec_is_rejected_by_the_gate(tmp_path: Path) -> None:
    def critic(request: LMRequest) -> str:
        if request.node == "textgrad:update:answer.prompt":
            var = request.messages[-1].content.split("<VARIABLE>\n")[1].split("\n</VARIABLE>")[0]
            return f"<IMPROVED_VARIABLE>{var} {{{{bogus}}}}</IMPROVED_VARIABLE>"  # keeps all, adds an unbound one
        return fake_optimizer_answer(request)

    patch, _, _, _ = _run(flowc.compile(QA_SPEC), critic, tmp_path=tmp_path)
    assert patch.params == {}  # the step's candidate did not compile: nothing of it is kept
    assert any(e["event"] == "rejected" and "bogus" in e["reason"] for e in _log(tmp_path))


def test_validation_gate_reverts_and_logs(tmp_path: Path) -> None:
    compiled = flowc.compile(QA_SPEC)
    good = always_right()

    def pipeline(request: LMRequest) -> str:  # any prompt carrying the hint answers wrong
        return "wrong" if HINT in request.prompt_text else good(request)

    patch, _, _, _ = _run(
        compiled, tmp_path=tmp_path, pipeline_answer=pipeline, validate=True, steps=2, skip_correct=False
    )
    assert patch.params == {} and patch.scores["val_before"] == patch.scores["val_after"] == 1.0
    assert patch.scores["effective_updates"] == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert [r["accepted"] for r in rows] == [False, False] and all(r["scores"]["val"] == 0.0 for r in rows)


def test_projected_calls_bound_the_real_ones(tmp_path: Path) -> None:
    compiled = flowc.compile(QA_SPEC)
    _patch, p_lm, o_lm, tg = _run(compiled, tmp_path=tmp_path, train=QA_TRAIN, steps=2, batch_size=2, validate=True)
    phases = tg.projected_calls(compiled, len(QA_TRAIN), len(QA_VAL))
    assert sum(b for b, _ in phases.values()) <= len(p_lm.calls) + len(o_lm.calls) <= sum(w for _, w in phases.values())
