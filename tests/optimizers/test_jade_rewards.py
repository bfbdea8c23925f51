"""JADE's experience buffer, rewards and penalties, read from real executor traces of
pipelines/jade_workflow.flow run on scripted models; advantages; the rollout client."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

import flowc
from flowc.compile import CompiledPipeline
from flowc.optimizers.jade.advantages import compute_advantages
from flowc.optimizers.jade.buffer import ExperienceBuffer, Transition
from flowc.optimizers.jade.rewards import RewardConfig, episode_transitions, role_violations
from flowc.optimizers.jade.rollout import SamplingLM, rollout_seed
from flowc.runtime.executor import Executor
from flowc.runtime.fakes import ScriptedLM
from flowc.runtime.lm import LMRequest, Message
from flowc.runtime.metrics import token_f1
from flowc.runtime.trace import RunResult
from flowc.testing.optimizer_fakes import FunctionLM

ROOT = Path(__file__).resolve().parents[2]
MODEL = "local/smollm2"
QUESTION = "What was PayPal Credit called?"


@pytest.fixture(scope="module")
def jade() -> CompiledPipeline:
    return flowc.compile(ROOT / "pipelines" / "jade_workflow.flow")


def rollout(compiled: CompiledPipeline, replies: Sequence[str], question: str = QUESTION) -> RunResult:
    return asyncio.run(Executor(compiled, lm=ScriptedLM(list(replies))).run({"question": question}))


def transitions(
    compiled: CompiledPipeline, run: RunResult, gold: str = "Bill Me Later", **cfg: float
) -> list[Transition]:
    outcome = token_f1(run.outputs.get("answer"), gold) if run.status == "ok" else 0.0
    return episode_transitions(run, compiled, {MODEL}, outcome, RewardConfig(**cfg), episode=0, question=0)  # type: ignore[arg-type]


def test_a_clean_rollout_gives_every_role_the_outcome(jade: CompiledPipeline) -> None:
    run = rollout(jade, ["<workflow>retrieve</workflow>", "<ids>1</ids>", "Bill Me Later"])
    ts = transitions(jade, run)
    assert [(t.node, t.role) for t in ts] == [
        ("plan", "planner"),
        ("select", "document selector"),
        ("answer", "answer generator"),
    ]
    assert all(t.penalty == 0 and t.outcome == 1.0 and t.reward == 1.0 for t in ts)
    assert ts[0].messages[-1]["content"].startswith("Question: What was PayPal Credit called?")
    assert ts[2].completion == "Bill Me Later" and ts[2].finished
    assert [t.call for t in ts] == [0, 1, 2]


def test_an_invalid_workflow_is_penalized_and_takes_the_fallback(jade: CompiledPipeline) -> None:
    run = rollout(jade, ["<workflow>search the web</workflow>", "<ids>1</ids>", "Bill"])
    assert run.path[:2] == ["plan", "retrieve"]  # the fallback
    plan, select, answer = transitions(jade, run)
    assert plan.penalty == -2.0 and "fallback" in plan.reasons
    assert select.penalty == 0 and answer.penalty == 0
    assert answer.outcome == pytest.approx(token_f1("Bill", "Bill Me Later"))
    assert plan.reward == pytest.approx(answer.outcome - 2.0)


def test_an_untagged_reply_is_read_but_penalized(jade: CompiledPipeline) -> None:
    run = rollout(jade, ["retrieve", "<ids>1</ids>", "Bill Me Later"])
    assert run.path[1] == "retrieve"  # flowc's lenient reader took it
    plan = transitions(jade, run)[0]
    assert plan.reasons == ("untagged",) and plan.penalty == -2.0


def test_an_unreadable_reply_and_its_repair_are_two_transitions(jade: CompiledPipeline) -> None:
    run = rollout(jade, ["<workflow>retrieve</workflow>", "the first one", "<ids>1</ids>", "Bill Me Later"])
    _plan, bad, repaired, _answer = transitions(jade, run)
    assert (bad.node, repaired.node) == ("select", "select")
    assert "unparseable" in bad.reasons and bad.penalty == -2.0
    assert repaired.penalty == 0 and repaired.messages[-2]["content"] == "the first one"


def test_a_failed_step_penalizes_its_last_reply_and_scores_zero(jade: CompiledPipeline) -> None:
    run = rollout(jade, ["<workflow>retrieve</workflow>", "first", "second"])
    assert run.status == "error"
    ts = transitions(jade, run)
    assert [t.node for t in ts] == ["plan", "select", "select"]
    assert all(t.outcome == 0.0 for t in ts) and ts[-1].penalty == -2.0 and ts[0].penalty == 0


def test_role_contracts(jade: CompiledPipeline) -> None:
    # the rewriter repeats the question; the selector names a document it was not shown
    run = rollout(jade, ["<workflow>rewrite</workflow>", QUESTION, "<ids>1,9</ids>", "Bill Me Later"])
    _plan, rewrite, select, answer = transitions(jade, run)
    assert rewrite.reasons == ("query repeats the question",)
    assert select.reasons == ("id outside the documents",)
    assert answer.penalty == 0
    # a decomposition with a duplicate, and an answer over 40 words
    long = " ".join(["word"] * 41)
    run = rollout(
        jade, ["<workflow>decompose</workflow>", "<subquestions>\nPayPal Credit\npaypal credit\n</subquestions>", long]
    )
    _, decompose, answer = transitions(jade, run)
    assert decompose.reasons == ("duplicate sub-questions",)
    assert answer.reasons == ("answer too long",)
    cfg = RewardConfig()
    assert role_violations("query decomposer", {"question": "q"}, {"s": []}, "", cfg) == ["sub-question count"]
    assert role_violations("answer generator", {"docs": ""}, {"a": "I don't know."}, "", cfg) == [
        "refused without documents"
    ]
    assert role_violations("answer summarizer", {"docs": ""}, {"a": "I don't know."}, "", cfg) == []


def test_cost_terms(jade: CompiledPipeline) -> None:
    run = rollout(jade, ["<workflow>retrieve</workflow>", "<ids>1</ids>", "Bill Me Later"])
    ts = transitions(jade, run, call_cost=0.3, retrieval_cost=0.6)
    # 3 calls: 0.3 · min(2, 3)/3; 1 retrieval: 0.6 · 1/3
    assert all(t.cost == pytest.approx(0.2 + 0.2) for t in ts)
    assert ts[0].reward == pytest.approx(1.0 - 0.4)


def test_only_the_trainable_models_calls_are_transitions(jade: CompiledPipeline) -> None:
    run = rollout(jade, ["<workflow>answer</workflow>", "Bill Me Later"])
    assert episode_transitions(run, jade, {"local/other"}, 1.0, RewardConfig(), episode=0, question=0) == []


def test_buffer_round_trip_and_stats(jade: CompiledPipeline, tmp_path: Path) -> None:
    buf = ExperienceBuffer()
    good = rollout(jade, ["<workflow>retrieve</workflow>", "<ids>1</ids>", "Bill Me Later"])
    bad = rollout(jade, ["nonsense", "<ids>1</ids>", "no idea"])
    buf.add_episode(0, 1.0, transitions(jade, good))
    buf.add_episode(1, 0.0, [dataclass_replace(t, episode=1) for t in transitions(jade, bad)])
    buf.advantages = compute_advantages(buf.transitions, "batch")
    buf.save(tmp_path / "b.jsonl")
    again = ExperienceBuffer.load(tmp_path / "b.jsonl")
    assert again.transitions == buf.transitions and again.advantages == pytest.approx(buf.advantages)
    stats = buf.stats()
    assert stats["episodes"] == 2 and stats["transitions"] == 6 and stats["outcome"] == 0.5
    assert stats["roles"]["planner"]["penalized"] == 0.5


def dataclass_replace(t: Transition, **changes: object) -> Transition:
    import dataclasses

    return dataclasses.replace(t, **changes)  # type: ignore[arg-type]


def make(question: int, node: str, outcome: float, penalty: float = 0.0, episode: int = 0) -> Transition:
    return Transition(episode, question, node, node, 0, (), "", True, penalty=penalty, outcome=outcome)


def test_group_baseline_per_question_and_node() -> None:
    ts = [
        make(0, "plan", 1.0),
        make(0, "plan", 0.0),
        make(0, "answer", 1.0),
        make(0, "answer", 1.0),
        make(1, "plan", 0.5),
    ]
    adv = compute_advantages(ts, "group", whiten=False)
    assert adv == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0])  # a lone rollout of a question learns nothing
    batch = compute_advantages(ts, "batch", whiten=False)
    assert batch == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0])
    assert compute_advantages(ts, "none", whiten=False) == pytest.approx([1.0, 0.0, 1.0, 1.0, 0.5])
    # penalties count: of two rollouts with the same outcome, the one that broke the format loses
    pen = [make(0, "plan", 1.0, -2.0), make(0, "plan", 1.0)]
    assert compute_advantages(pen, "group", whiten=False) == pytest.approx([-1.0, 1.0])


def test_whitening() -> None:
    ts = [make(0, "plan", r) for r in (0.0, 0.2, 0.4, 1.0)]
    adv = compute_advantages(ts, "group")
    assert sum(adv) == pytest.approx(0.0, abs=1e-6)
    assert sum(a * a for a in adv) / len(adv) == pytest.approx(1.0, rel=1e-3)
    assert compute_advantages([make(0, "plan", 1.0)] * 3, "group") == [0.0, 0.0, 0.0]


def test_the_sampling_client_changes_only_the_trainable_models_requests() -> None:
    inner = FunctionLM(lambda r: "ok")
    lm = SamplingLM(inner, {MODEL}, temperature=1.0, seed=7)
    grammar = {"grammar": 'root ::= "a"'}
    mine = LMRequest(model=MODEL, messages=(Message(role="user", content="q"),), constraint=grammar)
    other = LMRequest(model="openai/gpt-4o-mini", messages=(Message(role="user", content="q"),), constraint=grammar)
    asyncio.run(lm.complete(mine))
    asyncio.run(lm.complete(other))
    sent_mine, sent_other = inner.calls
    assert (sent_mine.temperature, sent_mine.seed, sent_mine.constraint) == (1.0, 7, None)
    assert sent_other == other
    kept = SamplingLM(inner, {MODEL}, temperature=0.7, seed=1, grammar=True)
    asyncio.run(kept.complete(mine))
    assert inner.calls[-1].constraint == grammar
    seeds = {rollout_seed(0, step, g) for step in range(1, 4) for g in range(4)}
    assert len(seeds) == 12 and rollout_seed(3, 2, 1) == rollout_seed(3, 2, 1)
