"""Both optimizers end to end on the embedded model (`local/smollm2` as pipeline and optimizer model).

Mechanics only: a 135M model cannot be a useful critic (ALGORITHMS.md §1.9), so these tests check
that a real model's replies flow through forward, backward and update (and bootstrap's harvest), that the patch is
valid and that the budget holds — not that anything improves. Kept tiny (one step, one example,
six-token answers, 2–4 calls per optimizer); the TextGrad test took 6 min on the 2 shared cores at
load 15, far less on an idle machine.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import flowc
from flowc.optimizers.bootstrap import BootstrapFewShot
from flowc.optimizers.budget import Budget
from flowc.optimizers.scoring import metric_from_spec
from flowc.optimizers.textgrad import TextGrad
from flowc.runtime.client import ModelClient
from flowc.testing.contracts import OptimizerContract

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SPEC = """pipeline tiny {
  input question: str
  output answer: str <- solve.answer
  model m = "local/smollm2" { max_tokens: 6 }
  node solve: llm {
    prompt: "Answer with one word. {{question}}"
    question <- question
    output answer: str
  }
  metric em: exact_match(output = answer, target = answer)
}
"""
TRAIN = [{"question": "What is the capital of France?", "answer": "Paris"}]
VAL = [{"question": "What is the capital of Italy?", "answer": "Rome"}]


def test_textgrad_on_the_embedded_model(tmp_path: Path) -> None:
    compiled = flowc.compile(SPEC)
    lm = ModelClient()
    # forward, one backward call, one update (and its repair when the tags are missing)
    tg = TextGrad(
        pipeline_lm=lm,
        optimizer_lm=lm,
        optimizer_model="local/smollm2",
        steps=1,
        batch_size=1,
        validate=False,
        max_tokens=12,
    )
    patch = tg.optimize(
        compiled,
        trainset=TRAIN,
        valset=VAL,
        metric=metric_from_spec(compiled),
        budget=Budget(calls=4),
        seed=0,
        run_dir=tmp_path / "tg",
    )
    OptimizerContract().assert_valid_patch(patch, compiled)
    assert 2 <= patch.budget_used["calls"] <= 4 and patch.budget_used["tokens"] > 0
    journal = [json.loads(x) for x in (tmp_path / "tg" / "journal-optimizer.jsonl").read_text().splitlines()]
    assert journal and journal[0]["response"]["text"].strip()  # the model's feedback, journaled for resume


def test_bootstrap_on_the_embedded_model(tmp_path: Path) -> None:
    compiled = flowc.compile(SPEC)
    bs = BootstrapFewShot(pipeline_lm=ModelClient(), max_demos=1, max_bootstrapped=1, num_candidates=1)
    patch = bs.optimize(
        compiled,
        trainset=TRAIN,
        valset=VAL,
        metric=metric_from_spec(compiled),
        budget=Budget(calls=3),
        seed=0,
        run_dir=tmp_path / "bs",
    )
    OptimizerContract().assert_valid_patch(patch, compiled)
    assert 2 <= patch.budget_used["calls"] <= 3
