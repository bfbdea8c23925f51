"""GEPA through the gepa package on flowc pipelines: the conformance suite, the reflective dataset
built from flowc's traces node by node, metric feedback, and the Pareto frontier."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gepa")

import flowc
from flowc.optimizers.budget import Budget
from flowc.optimizers.gepa import GEPA
from flowc.optimizers.gepa.adapter import Evaluated, pareto_front
from flowc.optimizers.registry import get_optimizer
from flowc.optimizers.scoring import Judgement, Metric, metric_from_spec
from flowc.runtime.lm import LMClient, LMRequest
from flowc.testing.contracts import OptimizerContract
from flowc.testing.optimizer_fakes import QA_SPEC, QA_TRAIN, QA_VAL, FunctionLM, qa_pipeline_answer


class TestGEPAContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> Any:
        return GEPA(pipeline_lm=pipeline_lm, optimizer_lm=optimizer_lm, max_metric_calls=24, resume=resume)


def test_registered() -> None:
    assert get_optimizer("gepa") is GEPA


def test_pareto_front_keeps_candidates_best_on_some_example() -> None:
    evaluated = [Evaluated({}, [1, 0, 0]), Evaluated({}, [0, 1, 0]), Evaluated({}, [0, 0, 0]), Evaluated({}, [1, 0, 0])]
    assert pareto_front(evaluated) == [0, 1, 3]


def test_reflection_sees_each_node_and_the_metrics_feedback(tmp_path: Path) -> None:
    compiled = flowc.compile(QA_SPEC)
    base = metric_from_spec(compiled)

    def judged(outputs: Any, example: Any) -> Judgement:
        score = base(outputs, example)
        return Judgement(score, "right" if score else "the answer must be the name of a city")

    metric = Metric("em_feedback", judged, base.output, base.target)
    seen: list[str] = []

    def reflector(request: LMRequest) -> str:
        seen.append(request.messages[-1].content)
        return "```\nName the capital city, then answer.\n```"

    p_lm = FunctionLM(qa_pipeline_answer)
    patch = GEPA(pipeline_lm=p_lm, optimizer_lm=FunctionLM(reflector), max_metric_calls=30).optimize(
        compiled,
        trainset=[dict(x) for x in QA_TRAIN],
        valset=[dict(x) for x in QA_VAL],
        metric=metric,
        budget=Budget(calls=500),
        seed=0,
        run_dir=tmp_path / "run",
    )
    assert seen, "the reflection model was asked"
    prompt = seen[0]
    assert "the answer must be the name of a city" in prompt  # the metric's feedback
    assert "Generated Outputs" in prompt and "{{" in prompt  # the node's own step, and its template
    assert (patch.scores["val_before"], patch.scores["val_after"]) == (0.0, 1.0)
    assert patch.scores["candidates"] >= 2 and patch.scores["pareto"] >= 1
    changed = next(iter(patch.params.values()))
    assert changed.startswith("Name the capital city, then answer.\n\n")  # the inputs follow the new text
    rows = (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()
    assert any('"pareto": true' in r for r in rows)
