"""TEP: the optimizer contract, then the mechanics of the free and nudged phases under fake models."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

import flowc
from flowc.optimizers.base import ParamPatch
from flowc.optimizers.budget import Budget
from flowc.optimizers.rundir import RunDir
from flowc.optimizers.scoring import metric_from_spec
from flowc.optimizers.tep import TEP
from flowc.optimizers.tep.critic import parse_critic
from flowc.optimizers.tep.edits import edit_ratio
from flowc.optimizers.tep.rubric import rubric_for
from flowc.runtime.lm import LMClient, LMRequest, LMResponse
from flowc.testing.contracts import OptimizerContract
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
)


class TestTEPContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> TEP:
        return TEP(
            pipeline_lm=pipeline_lm,
            optimizer_lm=optimizer_lm,
            optimizer_model="fake/optimizer",
            t_free=2,
            t_nudge=2,
            batch_size=2,
            resume=resume,
        )


# -- fakes -----------------------------------------------------------------------------------------------


def is_critic(request: LMRequest) -> bool:
    return "local critic" in request.messages[0].content


def is_update(request: LMRequest) -> bool:
    return "<CURRENT>" in request.messages[-1].content


def current_prompt(request: LMRequest) -> str:
    return between(request.messages[-1].content, "<CURRENT>", "</CURRENT>") or ""


def critic_reply(
    scores: Mapping[str, int] | None = None, suggestions: Sequence[str] = ("Add: x",), done: bool = False
) -> str:
    return json.dumps(
        {"scores": dict(scores or {"clarity": 3}), "suggestions": list(suggestions), "no_further_improvement": done}
    )


def optimizer(critic: Callable[[LMRequest], str], update: Answer | None = None) -> Answer:
    """An optimizer model: `critic(request)` for critic calls, `update` (default: the hint in front)
    for update calls."""

    def answer(request: LMRequest) -> str:
        if is_critic(request):
            return critic(request)
        if update is not None:
            return update(request)
        return f"<PROMPT>{HINT} {current_prompt(request).strip()}</PROMPT>"

    return answer


def _run(
    optimizer_answer: Answer,
    *,
    tmp_path: Path,
    compiled: flowc.CompiledPipeline | None = None,
    pipeline_answer: Answer = qa_pipeline_answer,
    train: Sequence[Mapping[str, Any]] = QA_TRAIN,
    val: Sequence[Mapping[str, Any]] = QA_VAL,
    budget: Budget | None = None,
    pipeline_lm: LMClient | None = None,
    optimizer_lm: LMClient | None = None,
    **kw: Any,
) -> tuple[ParamPatch, FunctionLM, FunctionLM, TEP]:
    compiled = compiled or flowc.compile(QA_SPEC)
    p_lm, o_lm = FunctionLM(pipeline_answer), FunctionLM(optimizer_answer)
    settings: dict[str, Any] = {"t_free": 3, "t_nudge": 3, "batch_size": 2, "validate": False} | kw
    tep = TEP(
        pipeline_lm=pipeline_lm or p_lm, optimizer_lm=optimizer_lm or o_lm, optimizer_model="fake/opt", **settings
    )
    patch = tep.optimize(
        compiled,
        trainset=list(train),
        valset=list(val),
        metric=metric_from_spec(compiled),
        budget=budget or Budget(calls=5000),
        seed=0,
        run_dir=tmp_path / "run",
    )
    return patch, p_lm, o_lm, tep


def _log(tmp_path: Path) -> list[dict[str, Any]]:
    return RunDir(tmp_path / "run").logs()


def _critic_calls(o_lm: FunctionLM) -> list[LMRequest]:
    return [r for r in o_lm.calls if is_critic(r)]


# -- the free phase ----------------------------------------------------------------------------------


def test_free_phase_stops_when_the_critic_sees_nothing_to_improve(tmp_path: Path) -> None:
    patch, _, o_lm, tep = _run(optimizer(lambda r: critic_reply(done=True)), tmp_path=tmp_path)
    # one critic call per node in the free phase and one in the nudged phase; no update at all
    assert [r.node for r in o_lm.calls] == ["tep:critic:draft.prompt", "tep:critic:answer.prompt"] * 2
    assert patch.params == {} and [s["phase"] for s in tep.stats] == ["free", "nudged"]
    rows = _log(tmp_path)
    assert {(r["phase"], r["node"], r["event"], r["reason"]) for r in rows} == {
        (phase, node, "equilibrium", "critic: no further improvement")
        for phase in ("free", "nudged")
        for node in ("draft", "answer")
    }


def test_free_phase_stops_when_scores_are_stable_over_the_window(tmp_path: Path) -> None:
    # overall scores 3, 3.5, 3 → variance 0.056 < 0.5: equilibrium after W = 3 evaluations
    seq = iter([3, 3, 4, 4, 3, 3] + [3] * 50)

    def critic(request: LMRequest) -> str:
        return critic_reply({"clarity": next(seq), "format": 3})

    _, _, o_lm, tep = _run(optimizer(critic), tmp_path=tmp_path, t_free=10, t_nudge=0)
    free = [s for s in tep.stats if s["phase"] == "free"]
    assert len(free) == 3 and len(_critic_calls(o_lm)) == 6
    assert free[-1]["proposed"] == [] and free[-1]["attempted"] == []
    ends = [r for r in _log(tmp_path) if r["event"] == "equilibrium"]
    assert {r["reason"] for r in ends} == {"scores stable"} and {r["step"] for r in ends} == {3}


def test_unstable_scores_run_to_the_cap(tmp_path: Path) -> None:
    # overall scores alternate 1 and 5: variance 3.6 ≥ 0.5, never stable; T_free caps the phase
    n = {"i": 0}

    def critic(request: LMRequest) -> str:
        n["i"] += 1
        return critic_reply({"clarity": 1 if (n["i"] // 2) % 2 else 5})

    _, _, o_lm, tep = _run(optimizer(critic), tmp_path=tmp_path, t_free=4, t_nudge=2)
    assert Counter(s["phase"] for s in tep.stats) == {"free": 4, "nudged": 2}
    # every iteration: one critic call per active node, both nodes active throughout
    for s in tep.stats:
        assert sorted(s["attempted"]) == ["answer.prompt", "draft.prompt"]
    assert len(_critic_calls(o_lm)) == 2 * 6
    # a variance threshold above the spread makes the same scores an equilibrium at W
    _, _, _, tep2 = _run(optimizer(critic), tmp_path=tmp_path / "wide", t_free=4, t_nudge=0, stability_var=5.0)
    assert len(tep2.stats) == 3


def test_nodes_are_updated_in_parallel(tmp_path: Path) -> None:
    """Each iteration's critic calls for the active nodes are in flight together (asyncio.gather):
    a critic that waits until both nodes' calls have arrived would deadlock if they ran in turn."""

    class Barrier:
        def __init__(self) -> None:
            self.waiting: list[asyncio.Future[None]] = []
            self.inner = FunctionLM(optimizer(lambda r: critic_reply()))

        async def complete(self, request: LMRequest) -> LMResponse:
            if is_critic(request):
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self.waiting.append(fut)
                if len(self.waiting) == 2:
                    for f in self.waiting:
                        f.set_result(None)
                    self.waiting = []
                await asyncio.wait_for(fut, timeout=5)
            return await self.inner.complete(request)

    barrier = Barrier()
    _, _, _, tep = _run(
        optimizer(lambda r: critic_reply()), tmp_path=tmp_path, optimizer_lm=barrier, t_free=2, t_nudge=1
    )
    assert len(tep.stats) == 3
    per_step = Counter((r.node, i) for i, r in enumerate(barrier.inner.calls) if is_critic(r))
    assert len(per_step) == 6  # 3 iterations × 2 nodes, one critic call each
    rows = [r for r in _log(tmp_path) if r["event"] == "proposal"]
    assert Counter(r["step"] for r in rows) == {1: 2, 2: 2, 3: 2}


# -- the nudged phase --------------------------------------------------------------------------------


def _chain_critic_prompts(depth: int, tmp_path: Path) -> tuple[list[dict[str, Any]], list[LMRequest]]:
    compiled = flowc.compile(deep_chain(depth, model_id="fake/model"))
    rows = capital_questions()
    _, _, o_lm, tep = _run(
        optimizer(lambda r: critic_reply()),
        tmp_path=tmp_path / f"d{depth}",
        compiled=compiled,
        pipeline_answer=chain_pipeline_answer,
        train=rows[:6],
        val=rows[6:8],
        t_free=1,
        t_nudge=1,
    )
    return tep.stats, _critic_calls(o_lm)


def test_the_task_message_has_the_same_size_whatever_the_depth(tmp_path: Path) -> None:
    stats2, calls2 = _chain_critic_prompts(2, tmp_path)
    stats8, calls8 = _chain_critic_prompts(8, tmp_path)
    nudged2 = [r.messages[-1].content for r in calls2 if "<TASK_OBJECTIVE>" in r.messages[-1].content]
    nudged8 = [r.messages[-1].content for r in calls8 if "<TASK_OBJECTIVE>" in r.messages[-1].content]
    assert len(nudged2) == 2 and len(nudged8) == 8  # every node of the nudged iteration got it

    def task(text: str) -> str:
        return text[text.index("<TASK_OBJECTIVE>") :]

    # the forward task message differs only in the pipeline's description (which names the depth)
    sizes2 = {len(task(t)) for t in nudged2}
    sizes8 = {len(task(t)) for t in nudged8}
    assert len(sizes2) == 1 and len(sizes8) == 1 and abs(sizes2.pop() - sizes8.pop()) <= 2
    # the whole critic prompt of a node is bounded by its own prompt and samples: the first node's
    # is the same at depth 2 and 8, and no node's grows with its distance from the output
    nudged = next(s for s in stats8 if s["phase"] == "nudged")["critic_prompt_chars"]
    first2 = next(s for s in stats2 if s["phase"] == "nudged")["critic_prompt_chars"]["step1.prompt"]
    assert abs(nudged["step1.prompt"] - first2) <= 2
    assert max(nudged.values()) - min(nudged.values()) < 200
    fb8 = next(s for s in stats8 if s["phase"] == "nudged")["feedback_chars"]
    assert len(set(fb8.values())) == 1  # what reaches each node's update is the same size for every node


def test_edits_above_beta_are_rejected_and_retried_once(tmp_path: Path) -> None:
    long_prompt = "Read the question. Think about which city it asks for. Then write notes: {{question}}"
    compiled = flowc.compile(QA_SPEC.replace('"Think about: {{question}}"', json.dumps(long_prompt)))

    def rewrite_all(request: LMRequest) -> str:
        cur = current_prompt(request)
        if "Make a smaller edit" in request.messages[-1].content:
            return f"<PROMPT>{cur.replace('Read the question.', 'Read it.')}</PROMPT>"
        return "<PROMPT>Completely different words here, nothing kept at all: {{question}}</PROMPT>"

    def rewrite(request: LMRequest) -> str:
        if "{{notes}}" in current_prompt(request):
            return f"<PROMPT>{current_prompt(request)}</PROMPT>"  # no change for the answer step
        return rewrite_all(request)

    _, _, o_lm, _ = _run(
        optimizer(lambda r: critic_reply(), rewrite), tmp_path=tmp_path, compiled=compiled, t_free=0, t_nudge=1
    )
    rows = [r for r in _log(tmp_path) if r["event"] == "proposal" and r["node"] == "draft"]
    assert len(rows) == 1
    row = rows[0]
    assert row["phase"] == "nudged" and row["beta"] == pytest.approx(0.3)
    assert row["attempts"][0]["rejected"] == "edit above beta" and row["attempts"][0]["edit_ratio"] > 0.3
    assert row["edit_ratio"] == pytest.approx(edit_ratio(long_prompt, row["prompt_after"])) and row["edit_ratio"] <= 0.3
    assert "Read it." in row["prompt_after"]
    updates = [r for r in o_lm.calls if r.node == "tep:update:draft.prompt"]
    assert len(updates) == 2 and "the limit is 30%" in updates[1].messages[-1].content
    assert "change at most 1 sentence(s)" in updates[0].messages[0].content  # ⌈0.3 × 3 sentences⌉

    # an updater that never makes a small enough edit: two attempts, then no proposal
    def always_big(request: LMRequest) -> str:
        return "<PROMPT>Completely different words here, nothing kept at all: {{question}}</PROMPT>"

    _, _, o_lm2, tep2 = _run(
        optimizer(lambda r: critic_reply(), always_big),
        tmp_path=tmp_path / "b",
        compiled=compiled,
        t_free=0,
        t_nudge=1,
    )
    assert len([r for r in o_lm2.calls if r.node == "tep:update:draft.prompt"]) == 2
    assert tep2.stats[0]["proposed"] == [] and tep2.stats[0]["attempted"] == ["answer.prompt", "draft.prompt"]
    # in the free phase there is no bound
    _, _, _, tep3 = _run(
        optimizer(lambda r: critic_reply(), always_big),
        tmp_path=tmp_path / "c",
        compiled=compiled,
        t_free=1,
        t_nudge=0,
    )
    assert tep3.stats[0]["proposed"] == ["draft.prompt"]  # (the answer step's lost its placeholders)


def test_beta_anneals_per_round(tmp_path: Path) -> None:
    # without the gate there is no validation signal to plateau on: patience 3 runs all 3 rounds
    _, _, o_lm, tep = _run(
        optimizer(lambda r: critic_reply()),
        tmp_path=tmp_path,
        t_free=1,
        t_nudge=1,
        rounds=3,
        patience=3,
        beta0=0.4,
        decay=0.5,
    )
    betas = [r["beta"] for r in _log(tmp_path) if r["event"] == "proposal" and r["phase"] == "nudged"]
    assert betas == pytest.approx([0.4, 0.4, 0.2, 0.2, 0.1, 0.1])
    assert [s["round"] for s in tep.stats] == [0, 0, 1, 1, 2, 2]
    emphasis = [
        between(r.messages[-1].content, "(emphasis ", " on")
        for r in _critic_calls(o_lm)
        if "<TASK_OBJECTIVE>" in r.messages[-1].content
    ]
    assert emphasis == ["0.40", "0.40", "0.20", "0.20", "0.10", "0.10"]


def test_placeholders_are_preserved(tmp_path: Path) -> None:
    def drop(request: LMRequest) -> str:
        cur = current_prompt(request)
        if "keep exactly" in request.messages[-1].content:
            return f"<PROMPT>{HINT} {cur}</PROMPT>"
        return f"<PROMPT>{HINT} {cur.replace('{{question}}', 'the question')}</PROMPT>"

    patch, _, o_lm, _ = _run(optimizer(lambda r: critic_reply(), drop), tmp_path=tmp_path, t_free=1, t_nudge=0)
    assert patch.params["draft.prompt"] == f"{HINT} Think about: {{{{question}}}}"
    assert "{{notes}}" in patch.params["answer.prompt"] and "{{question}}" in patch.params["answer.prompt"]
    retry = [r for r in o_lm.calls if r.node == "tep:update:draft.prompt"][1].messages[-1].content
    assert "keep exactly: question" in retry
    rows = [r for r in _log(tmp_path) if r["event"] == "proposal"]
    assert all(r["attempts"][0]["rejected"] == "placeholders changed" for r in rows)
    # never a prompt without them: an updater that always drops one gets no proposal
    always = optimizer(lambda r: critic_reply(), lambda r: "<PROMPT>No placeholders.</PROMPT>")
    patch2, _, _, _ = _run(always, tmp_path=tmp_path / "b", t_free=1, t_nudge=0)
    assert patch2.params == {}


def hurting_and_helping(request: LMRequest) -> str:
    """The answer step's rewrite makes it say "dunno" to everything; the draft's puts the hint at the
    end of its prompt, where it reaches the notes (so the answer step sees "capital")."""
    cur = current_prompt(request)
    return f"<PROMPT>NEVER answer. {cur}</PROMPT>" if "{{notes}}" in cur else f"<PROMPT>{cur} {HINT}</PROMPT>"


def never_or_qa(request: LMRequest) -> str:
    return "dunno" if "NEVER" in "\n".join(m.content for m in request.messages) else qa_pipeline_answer(request)


@pytest.mark.parametrize("gate", ["joint", "per_node"])
def test_the_validation_gate_rejects_a_hurting_update(tmp_path: Path, gate: str) -> None:
    patch, _, _, tep = _run(
        optimizer(lambda r: critic_reply(), hurting_and_helping),
        tmp_path=tmp_path,
        pipeline_answer=never_or_qa,
        validate=True,
        gate=gate,
        t_free=1,
        t_nudge=0,
        rounds=1,
    )
    assert set(patch.params) == {"draft.prompt"} and patch.scores["val_after"] == 1.0
    assert patch.scores["val_before"] == 0.0
    assert tep.stats[0]["accepted"] == ["draft.prompt"]
    rows = {r["param"]: r for r in _log(tmp_path) if r["event"] == "proposal"}
    assert rows["answer.prompt"]["accepted"] is False and rows["answer.prompt"]["val"] == 0.0  # 1.0 → 0.0
    assert rows["draft.prompt"]["accepted"] is True and rows["draft.prompt"]["val"] == 1.0
    cands = [json.loads(x) for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert {c["id"]: c["accepted"] for c in cands} == {"step1:answer.prompt": False, "step1:draft.prompt": True}


def test_forward_signal_b_adds_the_contrast(tmp_path: Path) -> None:
    no_fix = optimizer(lambda r: critic_reply(), lambda r: f"<PROMPT>Please. {current_prompt(r)}</PROMPT>")
    _, _, o_lm, _ = _run(no_fix, tmp_path=tmp_path, forward_signal="B", t_free=1, t_nudge=1)
    critics = _critic_calls(o_lm)
    free, nudged = critics[:2], critics[2:]
    assert not any("<CONTRAST>" in r.messages[-1].content for r in free)
    assert all("<CONTRAST>" in r.messages[-1].content for r in nudged)
    contrast = between(nudged[0].messages[-1].content, "<CONTRAST>", "</CONTRAST>") or ""
    # its own output on a failed example, next to the expected final answer (not the whole example)
    assert 'reached the final answer "Paris"' in contrast and "question" not in contrast
    _, _, o_lm_a, _ = _run(optimizer(lambda r: critic_reply()), tmp_path=tmp_path / "a", t_free=1, t_nudge=1)
    assert not any("<CONTRAST>" in r.messages[-1].content for r in _critic_calls(o_lm_a))
    with pytest.raises(flowc.errors.FlowcError, match="forward_signal"):
        _run(optimizer(lambda r: critic_reply()), tmp_path=tmp_path / "c", forward_signal="C")


def test_unreadable_critic_replies_do_not_crash(tmp_path: Path) -> None:
    for reply in ["I think the prompt is fine.", "{not json", '["a list"]', '{"scores": "many"}']:
        parsed = parse_critic(reply, rubric_for("r", []), 3, 40)
        assert parsed.suggestions == () and not parsed.no_change
    patch, _, o_lm, tep = _run(optimizer(lambda r: "Looks good to me!"), tmp_path=tmp_path, t_free=5, t_nudge=5)
    assert patch.params == {}
    # W = 3 unreadable replies in a row end each phase for the node
    assert Counter(s["phase"] for s in tep.stats) == {"free": 3, "nudged": 3}
    ends = [r for r in _log(tmp_path) if r["event"] == "equilibrium"]
    assert {r["reason"] for r in ends} == {"critic unreadable"} and len(ends) == 4
    assert not any(is_update(r) for r in o_lm.calls)


def test_a_readable_reply_without_scores_is_not_unreadable(tmp_path: Path) -> None:
    _, _, _, tep = _run(
        optimizer(
            lambda r: json.dumps({"suggestions": ["Add: x"]}), lambda r: f"<PROMPT>x {current_prompt(r)}</PROMPT>"
        ),
        tmp_path=tmp_path,
        t_free=4,
        t_nudge=0,
    )
    assert len(tep.stats) == 4  # no score history, no equilibrium: the cap ends the phase


def test_parse_critic_bounds_suggestions() -> None:
    reply = "Here you go: " + critic_reply(
        {"clarity": 7, "format": 0.4, "bogus": 3}, [" ".join(["w"] * 100), "b", "c", "d", ""]
    )
    parsed = parse_critic(reply, rubric_for("r", []), 3, 40)
    assert parsed.scores == {"clarity": 5, "format": 1}  # clamped to 1–5; unknown ids dropped
    assert len(parsed.suggestions) == 3 and len(parsed.suggestions[0].split()) == 40
    assert parsed.readable and parsed.overall == 3.0


def test_budget_stops_cleanly_mid_phase(tmp_path: Path) -> None:
    patch, p_lm, o_lm, _ = _run(optimizer(lambda r: critic_reply()), tmp_path=tmp_path, budget=Budget(calls=15))
    assert patch.stopped_by == "budget: calls"
    assert len(p_lm.calls) + len(o_lm.calls) <= 15 and patch.budget_used["calls"] <= 15


def test_the_log_has_what_a_reader_needs(tmp_path: Path) -> None:
    _run(
        optimizer(lambda r: critic_reply({"clarity": 2, "format": 4})),
        tmp_path=tmp_path,
        validate=True,
        t_free=1,
        t_nudge=1,
    )
    rows = [r for r in _log(tmp_path) if r["event"] == "proposal"]
    assert {r["phase"] for r in rows} == {"free", "nudged"}
    for r in rows:
        if r["prompt_after"] is None:  # e.g. an edit above beta, twice
            continue
        for key in (
            "step",
            "phase",
            "round",
            "node",
            "param",
            "prompt_before",
            "prompt_after",
            "edit_ratio",
            "critic_scores",
            "overall",
            "suggestions",
            "val",
            "accepted",
            "feedback_chars",
            "beta",
        ):
            assert key in r, key
        assert r["critic_scores"] == {"clarity": 2, "format": 4} and r["overall"] == 3.0
        assert r["edit_ratio"] == pytest.approx(edit_ratio(r["prompt_before"], r["prompt_after"]))
    assert any(r["accepted"] for r in rows)
    settings = json.loads((tmp_path / "run" / "job.json").read_text())["settings"]
    assert settings["t_free"] == 1 and settings["beta0"] == 0.3 and settings["forward_signal"] == "A"


def test_projected_calls_cover_a_run(tmp_path: Path) -> None:
    compiled = flowc.compile(QA_SPEC)
    _, p_lm, o_lm, tep = _run(optimizer(lambda r: critic_reply()), tmp_path=tmp_path, validate=True)
    worst = sum(w for _, w in tep.projected_calls(compiled, len(QA_TRAIN), len(QA_VAL)).values())
    assert len(p_lm.calls) + len(o_lm.calls) <= worst


def test_default_fakes_reach_equilibrium_once_the_hint_is_in(tmp_path: Path) -> None:
    patch, _, _, tep = _run(fake_optimizer_answer, tmp_path=tmp_path, validate=True, t_free=5, t_nudge=5)
    assert patch.params == {
        "draft.prompt": f"{HINT} Think about: {{{{question}}}}",
        "answer.prompt": f"{HINT} Notes: {{{{notes}}}} Q: {{{{question}}}}",
    }
    # round 1 raised validation 0 → 1, so a second round runs; its critics are at equilibrium at
    # once and validation does not rise: the plateau ends the job
    assert [s["phase"] for s in tep.stats] == ["free", "free", "nudged", "free", "nudged"]
    assert [s["round"] for s in tep.stats] == [0, 0, 0, 1, 1]


def test_joint_gates_need_one_validation_pass_when_the_edits_help(tmp_path: Path) -> None:
    runs = {}
    for gate in ("per_node", "joint_first", "joint"):
        patch, p_lm, _, _ = _run(
            optimizer(lambda r: critic_reply()),
            tmp_path=tmp_path / gate,
            validate=True,
            gate=gate,
            t_free=1,
            t_nudge=0,
            rounds=1,
        )
        runs[gate] = (patch.params, len(p_lm.calls))
    # alone, the draft's hint ties on validation and lengthens the prompt: per_node refuses it; the
    # joint pass judges both edits together (they raise validation 0 → 1) and keeps both
    assert set(runs["per_node"][0]) == {"answer.prompt"}
    assert runs["joint_first"][0] == runs["joint"][0] and len(runs["joint"][0]) == 2
    # baseline 4 + minibatch 4 + gate: per node 2 × 4 (one passes alone: no joint check), or one joint pass of 4
    assert runs["per_node"][1] == 16 and runs["joint_first"][1] == runs["joint"][1] == 12
    cands = [json.loads(x) for x in (tmp_path / "joint" / "run" / "candidates.jsonl").read_text().splitlines()]
    assert {c["gate"] for c in cands} == {"joint"} and all(c["accepted"] for c in cands)


@pytest.mark.parametrize("gate", ["joint_first", "joint"])
def test_joint_gates_fall_back_when_the_edits_fail_together(tmp_path: Path, gate: str) -> None:
    patch, _, _, _ = _run(
        optimizer(lambda r: critic_reply(), hurting_and_helping),
        tmp_path=tmp_path,
        pipeline_answer=never_or_qa,
        validate=True,
        gate=gate,
        t_free=1,
        t_nudge=0,
        rounds=1,
    )
    assert set(patch.params) == {"draft.prompt"}
    cands = [json.loads(x) for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    fallback = "per_node" if gate == "joint_first" else "halves"
    assert {c["id"]: (c["accepted"], c["gate"]) for c in cands} == {
        "step1:answer.prompt": (False, fallback),
        "step1:draft.prompt": (True, fallback),
    }
    with pytest.raises(flowc.errors.FlowcError, match="gate must be"):
        _run(optimizer(lambda r: critic_reply()), tmp_path=tmp_path / "x", gate="sometimes")
