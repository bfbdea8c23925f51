"""The fakes shipped for optimizer tests and the depth benchmark behave as documented."""

from __future__ import annotations

import asyncio

import pytest

from flowc.optimizers.textgrad.prompts import fill
from flowc.runtime.lm import LMRequest, chat
from flowc.testing.optimizer_fakes import (
    HINT,
    FunctionLM,
    GrowingCritic,
    KillSwitch,
    SimulatedKill,
    chain_pipeline_answer,
)


def req(user: str, system: str | None = None) -> LMRequest:
    return LMRequest(model="fake/m", messages=chat(system, user))


def chain_request(downstream: str) -> LMRequest:
    user = fill(
        "backward_chain",
        role="the prompt",
        conversation="(call)",
        output_role="the output",
        downstream=downstream,
        examples="",
        variable="Question: {{question}}",
        max_words=50,
    )
    return req(user, fill("backward_system"))


@pytest.mark.parametrize("share", [1.0, 0.5, 0.0])
def test_growing_critic_echoes_a_share_of_the_downstream_feedback(share: float) -> None:
    critic = GrowingCritic(share=share, own_words=5)
    base = req("<EVALUATION> exact_match = 0 (wrong). </EVALUATION>")
    own = critic(base)
    assert own == "Critique: w0 w1 w2 w3"
    assert critic(req("<EVALUATION> exact_match = 1 (correct). </EVALUATION>")) == "No change needed."
    downstream = own + " " + "x" * 100
    fb = critic(chain_request(downstream))
    assert fb == f"{own} {downstream[: int(len(downstream) * share)]}".strip()
    assert critic(chain_request("No change needed.")) == "No change needed."


def test_growing_critic_updates_only_with_a_critique() -> None:
    critic = GrowingCritic()
    system = "reply between <IMPROVED_VARIABLE> and </IMPROVED_VARIABLE>"
    with_critique = "<VARIABLE>\nQ: {{q}}\n</VARIABLE>\n<CONTEXT><FEEDBACK> Critique: w0 </FEEDBACK></CONTEXT>"
    without = "<VARIABLE>\nQ: {{q}}\n</VARIABLE>\n<CONTEXT><FEEDBACK> No change needed. </FEEDBACK></CONTEXT>"
    assert critic(req(with_critique, system)) == f"<IMPROVED_VARIABLE>{HINT} Q: {{{{q}}}}</IMPROVED_VARIABLE>"
    assert critic(req(without, system)) == "<IMPROVED_VARIABLE>Q: {{q}}</IMPROVED_VARIABLE>"


def test_chain_pipeline_answer() -> None:
    assert (
        chain_pipeline_answer(req("Question: What is the capital of Peru?\nWrite a first...")) == "I think it is Lima."
    )
    refine = "Question: What is the capital of Peru?\nCurrent answer: I think it is Lima.\n\nFix it."
    assert chain_pipeline_answer(req(refine)) == "I think it is Lima."
    assert chain_pipeline_answer(req(f"{HINT} {refine}")) == "Lima"


def test_kill_switch_counts_across_clients() -> None:
    kill = KillSwitch(after=2)
    a, b = kill.wrap(FunctionLM(lambda r: "a")), kill.wrap(FunctionLM(lambda r: "b"))
    asyncio.run(a.complete(req("1")))
    asyncio.run(b.complete(req("2")))
    with pytest.raises(SimulatedKill):
        asyncio.run(a.complete(req("3")))
    assert kill.answered == 2
    assert not issubclass(SimulatedKill, Exception)  # no `except Exception` swallows it
