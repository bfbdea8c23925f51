"""BootstrapFewShot: the optimizer contract, then harvesting and the validation gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import flowc
from flowc.optimizers.base import ParamPatch
from flowc.optimizers.bootstrap import BootstrapFewShot
from flowc.optimizers.budget import Budget
from flowc.optimizers.scoring import metric_from_spec
from flowc.runtime.lm import LMClient, LMRequest
from flowc.testing.contracts import OptimizerContract
from flowc.testing.optimizer_fakes import QA_SPEC, QA_TRAIN, QA_VAL, FunctionLM, always_right, qa_pipeline_answer


class TestBootstrapContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> BootstrapFewShot:
        return BootstrapFewShot(
            pipeline_lm=pipeline_lm, max_demos=2, max_bootstrapped=3, num_candidates=3, resume=resume
        )


def _optimize(pipeline: FunctionLM, tmp_path: Path, **kw: Any) -> ParamPatch:
    compiled = flowc.compile(QA_SPEC)
    opt = BootstrapFewShot(pipeline_lm=pipeline, **({"max_demos": 2, "max_bootstrapped": 3} | kw))
    return opt.optimize(
        compiled,
        trainset=list(QA_TRAIN),
        valset=list(QA_VAL),
        metric=metric_from_spec(compiled),
        budget=Budget(calls=500),
        seed=0,
        run_dir=tmp_path / "run",
    )


def test_demos_come_only_from_successful_runs(tmp_path: Path) -> None:
    patch = _optimize(FunctionLM(qa_pipeline_answer), tmp_path)
    assert set(patch.params) == {"draft.demos", "answer.demos"}
    successful = {ex["question"] for ex in QA_TRAIN if "capital" in ex["question"].lower()}
    for name, demos in patch.params.items():
        assert demos, name
        for demo in demos:
            assert demo["question"] in successful, demo  # failed runs ("dunno") give no demo
    assert all(d["answer"] == "Paris" for d in patch.params["answer.demos"])
    assert patch.scores["val_after"] == 1.0 > patch.scores["val_before"]
    assert patch.provenance["answer.demos"].candidate.startswith("c")


def test_threshold_decides_success(tmp_path: Path) -> None:
    never = FunctionLM(lambda r: "dunno")
    patch = _optimize(never, tmp_path)
    assert patch.params == {}  # nothing succeeded: nothing to harvest, no candidate scored
    assert not (tmp_path / "run" / "candidates.jsonl").exists()


def test_gate_keeps_the_base_when_demos_hurt(tmp_path: Path) -> None:
    good = always_right()

    lm = FunctionLM(lambda r: "wrong" if _has_demo(r) else good(r))
    patch = _optimize(lm, tmp_path, num_candidates=3)
    assert patch.params == {} and patch.provenance == {}
    assert patch.scores["val_before"] == patch.scores["val_after"] == 1.0
    rows = [json.loads(x) for x in (tmp_path / "run" / "candidates.jsonl").read_text().splitlines()]
    assert rows and not any(r["accepted"] for r in rows) and all(r["scores"]["val"] == 0.0 for r in rows)


def _has_demo(request: LMRequest) -> bool:
    """A validation request that carries a training question can only have it from a demo."""
    text = request.prompt_text
    val = any(ex["question"] in text for ex in QA_VAL)
    return val and any(ex["question"] in text for ex in QA_TRAIN)
