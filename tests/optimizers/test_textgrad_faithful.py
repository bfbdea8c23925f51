"""TextGrad's faithfulness fixes (issue 12 §2), each on scripted models: routers get feedback,
`all X` links every iteration, no calls on examples already right or on "No change needed.", the
objective sentence reads, and the gate stops no-gain growth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flowc
from flowc.optimizers.budget import Budget
from flowc.optimizers.scoring import accept, growth, metric_from_spec
from flowc.optimizers.textgrad import TextGrad
from flowc.optimizers.textgrad.graph import GradGraph, asks_for_change
from flowc.runtime.executor import Executor
from flowc.runtime.lm import LMRequest
from flowc.testing.optimizer_fakes import (
    HINT,
    QA_SPEC,
    QA_TRAIN,
    QA_VAL,
    Answer,
    FunctionLM,
    fake_optimizer_answer,
    qa_pipeline_answer,
    request_text,
)

#: A planner that loops back to the reflector once, then routes to the generator; the generator
#: and the planner read every piece of evidence (`all reflect.evidence`).
RESEARCH = """pipeline research {
  input question: str
  output answer: str <- generate.answer
  model m = "fake/model"
  node reflect: llm {
    prompt: "Find a fact for: {{query}}"
    query <- plan.query ?? question
    output evidence: str
  }
  node plan: llm {
    prompt: "Question: {{question}} Evidence: {{evidence}} Search again or generate?"
    format: tagged
    fallback: generate
    question <- question
    evidence <- all reflect.evidence
    output next: route[reflect, generate]
    output query: str?
  }
  node generate: llm {
    prompt: "Evidence: {{evidence}} Question: {{question}}"
    question <- question
    evidence <- all reflect.evidence
    output answer: str
  }
  loop research: plan -> reflect max 2
  metric em: exact_match(output = answer, target = answer)
}
"""


def research_answer(request: LMRequest) -> str:
    text = request_text(request)
    if text.startswith("Find a fact"):
        return "fact " + text.split("for:")[1].strip()[:20]
    if "Search again" in text:
        return "<next>generate</next>" if text.count("fact ") >= 2 else "<next>reflect</next><query>more</query>"
    return "dunno"


def _run(
    spec: str,
    pipeline_answer: Answer,
    tmp_path: Path,
    optimizer_answer: Answer = fake_optimizer_answer,
    train: Any = QA_TRAIN[1:2],
    **kw: Any,
) -> tuple[Any, FunctionLM, FunctionLM]:
    compiled = flowc.compile(spec)
    p_lm, o_lm = FunctionLM(pipeline_answer), FunctionLM(optimizer_answer)
    settings: dict[str, Any] = {"steps": 1, "batch_size": 1, "validate": False} | kw
    patch = TextGrad(pipeline_lm=p_lm, optimizer_lm=o_lm, optimizer_model="fake/opt", **settings).optimize(
        compiled,
        trainset=list(train),
        valset=list(QA_VAL),
        metric=metric_from_spec(compiled),
        budget=Budget(calls=1000),
        seed=0,
        run_dir=tmp_path / "run",
    )
    return patch, p_lm, o_lm


def test_history_inputs_link_every_iteration_and_routes_link_the_router() -> None:
    compiled = flowc.compile(RESEARCH)
    run = Executor(compiled, lm=FunctionLM(research_answer)).run_sync({"question": "Where is Notre-Dame?"})
    seqs = {s.node: [x.seq for x in run.steps if x.node == s.node] for s in run.steps}
    assert seqs == {"reflect": [0, 2], "plan": [1, 3], "generate": [4]}
    graph = GradGraph(compiled, ["reflect.prompt", "plan.prompt", "generate.prompt"])
    assert graph.add_run(0, run, "answer") == "ex0/step4"
    generate = graph.vars["ex0/step4"]
    # both iterations' evidence fed `all reflect.evidence`; the planner's last step chose generate
    assert generate.links == {
        "param:generate.prompt": "param",
        "ex0/step0": "history",
        "ex0/step2": "history",
        "ex0/step3": "route",
    }
    # the second reflect step got its query from the first plan step (a value, not only a route)
    assert graph.vars["ex0/step2"].links == {"param:reflect.prompt": "param", "ex0/step1": "data"}


def test_the_router_prompt_gets_feedback_and_an_update(tmp_path: Path) -> None:
    patch, _, o_lm = _run(RESEARCH, research_answer, tmp_path, train=[{"question": "Where is X?", "answer": "Y"}])
    tags = [r.node or "" for r in o_lm.calls]
    assert "textgrad:backward:ex0/step3" in tags  # generate → the planner's routing decision
    assert "textgrad:backward:param:plan.prompt" in tags
    assert "textgrad:update:plan.prompt" in tags and "plan.prompt" in patch.params
    route = next(r for r in o_lm.calls if r.node == "textgrad:backward:ex0/step3").messages[-1].content
    assert "This output is a routing\ndecision" in route and "(the choices: reflect, generate)" in route
    assert "<LM_OUTPUT> dunno </LM_OUTPUT>" in route  # the chosen step's call
    # every iteration's evidence got feedback from the generator
    assert {"textgrad:backward:ex0/step0", "textgrad:backward:ex0/step2"} <= set(tags)


def test_no_backward_on_examples_already_right(tmp_path: Path) -> None:
    right = [x for x in QA_TRAIN if "capital" in x["question"].lower()]
    patch, _, o_lm = _run(QA_SPEC, qa_pipeline_answer, tmp_path, train=right, batch_size=3)
    assert o_lm.calls == [] and patch.params == {}
    steps = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert steps[0]["skipped_correct"] == 3
    # the release's behaviour is still available
    _, _, o_lm2 = _run(QA_SPEC, qa_pipeline_answer, tmp_path / "all", train=right, skip_correct=False)
    assert o_lm2.calls


def test_no_update_when_every_feedback_says_no_change(tmp_path: Path) -> None:
    def critic(request: LMRequest) -> str:
        return "No change needed." if "backward" in (request.node or "") else fake_optimizer_answer(request)

    patch, _, o_lm = _run(QA_SPEC, qa_pipeline_answer, tmp_path, critic)
    # the answer step's prompt and the draft's output get asked; both say no change: nothing goes
    # further upstream (the draft's prompt) and no update is asked for
    assert [r.node for r in o_lm.calls] == ["textgrad:backward:param:answer.prompt", "textgrad:backward:ex0/step0"]
    assert patch.params == {}
    assert not asks_for_change("No change needed.") and not asks_for_change("  no changes are necessary. ")
    assert asks_for_change("No change needed in the intro, but add: Name the capital city, and keep it short.")


def test_the_objective_sentence_names_the_evaluated_output(tmp_path: Path) -> None:
    _, _, o_lm = _run(QA_SPEC, qa_pipeline_answer, tmp_path)
    base = o_lm.calls[0].messages[-1].content
    assert "The only goal is a better\nevaluation of the output of the 'answer' step." in base
    assert "a correct the" not in base


def test_the_gate_stops_no_gain_growth(tmp_path: Path) -> None:
    """The fake critic prepends the same hint every step; the pipeline never gets better. Under the
    papers' `>=` the prompts grew by one hint per step; the gate now refuses a longer no-gain edit."""
    patch, _, o_lm = _run(QA_SPEC, lambda r: "dunno", tmp_path, validate=True, steps=3)
    assert len([r for r in o_lm.calls if (r.node or "").startswith("textgrad:update")]) == 6
    assert patch.params == {} and patch.scores["effective_updates"] == 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert [r["accepted"] for r in rows] == [False] * 3 and all(r["growth"] > 0 for r in rows)


def test_the_gate_keeps_a_no_gain_rewording(tmp_path: Path) -> None:
    def shorter(request: LMRequest) -> str:  # an update that rewords the prompt more briefly
        if "<IMPROVED_VARIABLE>" in request.messages[0].content:
            var = request.messages[-1].content.split("<VARIABLE>\n")[1].split("\n</VARIABLE>")[0]
            return (
                f"<IMPROVED_VARIABLE>{var.replace('Notes:', 'N:').replace('Think about:', 'On:')}</IMPROVED_VARIABLE>"
            )
        return fake_optimizer_answer(request)

    patch, _, _ = _run(QA_SPEC, lambda r: "dunno", tmp_path, shorter, validate=True)
    assert patch.params == {"draft.prompt": "On: {{question}}", "answer.prompt": "N: {{notes}} Q: {{question}}"}


def test_accept() -> None:
    assert accept(0.6, 0.5, growth=500) and not accept(0.4, 0.5, growth=-10)
    assert accept(0.5, 0.5) and accept(0.5, 0.5, growth=-3) and not accept(0.5, 0.5, growth=1)
    assert growth({"a": "x"}, {"a": f"{HINT} x"}) == len(HINT) + 1
    assert growth({"d": []}, {"d": [{"q": 1}]}) == len('[{"q": 1}]') - len("[]")
