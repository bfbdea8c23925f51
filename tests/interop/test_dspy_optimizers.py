"""DSPy's optimizers on flowc pipelines, through the conformance suite (the fake QA pipeline:
demos from successful training runs mention 'capital', which makes the fake model answer right)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("dspy")

import flowc
from flowc.optimizers.budget import Budget
from flowc.optimizers.dspy import BootstrapFewShotWithRandomSearch, MIPROv2
from flowc.optimizers.registry import get_optimizer
from flowc.optimizers.scoring import metric_from_spec
from flowc.runtime.lm import LMClient, LMRequest
from flowc.testing.contracts import OptimizerContract
from flowc.testing.optimizer_fakes import QA_SPEC, QA_TRAIN, QA_VAL, FunctionLM, qa_pipeline_answer


class TestDSPyRandomSearchContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> Any:
        return BootstrapFewShotWithRandomSearch(
            pipeline_lm=pipeline_lm, optimizer_lm=optimizer_lm, num_candidates=2, resume=resume
        )


def _proposer(request: LMRequest) -> str:
    """A fake MIPROv2 proposer answering in DSPy's chat format: every proposal names the capital."""
    text = "\n".join(m.content for m in request.messages)
    fields = [
        f
        for f in ("proposed_instruction", "program_description", "module_description", "summary", "observations")
        if f"[[ ## {f} ## ]]" in text.split("Your output fields are:")[-1]
    ]
    field = fields[0] if fields else "proposed_instruction"
    return f"[[ ## {field} ## ]]\nAnswer with the capital city.\n\n[[ ## completed ## ]]"


def test_registered_names() -> None:
    assert get_optimizer("dspy:MIPROv2") is MIPROv2
    assert get_optimizer("dspy:GEPA").teleprompter == "GEPA"


def test_miprov2_writes_instructions_back(tmp_path: Path) -> None:
    compiled = flowc.compile(QA_SPEC)
    p_lm, o_lm = FunctionLM(qa_pipeline_answer), FunctionLM(_proposer)
    opt = MIPROv2(
        pipeline_lm=p_lm,
        optimizer_lm=o_lm,
        num_candidates=2,
        num_trials=2,
        max_bootstrapped_demos=0,
        max_labeled_demos=0,
    )
    patch = opt.optimize(
        compiled,
        trainset=[dict(x) for x in QA_TRAIN],
        valset=[dict(x) for x in QA_VAL],
        metric=metric_from_spec(compiled),
        budget=Budget(calls=2000),
        seed=0,
        run_dir=tmp_path / "run",
    )
    assert patch.scores["val_before"] == 0.0 and patch.scores["val_after"] == 1.0
    # the instructions hold no placeholders: the node's inputs follow them, as FlowcAdapter sent them
    assert "answer.prompt" in patch.params
    assert patch.params["answer.prompt"].startswith("Answer with the capital city.\n\n")
    assert "notes: {{notes}}" in patch.params["answer.prompt"]
    assert patch.budget_used["calls"] == len(p_lm.calls) + len(o_lm.calls)


def _reflector(request: LMRequest) -> str:
    """A fake reflection model for GEPA: the new instruction in a fenced block."""
    return "```\nAnswer with the capital city.\n```"


@pytest.mark.parametrize("cls_name", ["dspy:GEPA", "dspy:SIMBA"])
def test_reflective_dspy_optimizers_run_through_the_job(tmp_path: Path, cls_name: str) -> None:
    compiled = flowc.compile(QA_SPEC)
    p_lm, o_lm = FunctionLM(qa_pipeline_answer), FunctionLM(_reflector)
    cls = get_optimizer(cls_name)
    opt = cls(pipeline_lm=p_lm, optimizer_lm=o_lm, max_metric_calls=12, simba_steps=1, num_candidates=2)
    patch = opt.optimize(
        compiled,
        trainset=[dict(x) for x in QA_TRAIN],
        valset=[dict(x) for x in QA_VAL],
        metric=metric_from_spec(compiled),
        budget=Budget(calls=400),
        seed=0,
        run_dir=tmp_path / "run",
    )
    assert patch.budget_used["calls"] == len(p_lm.calls) + len(o_lm.calls) <= 400
    assert patch.scores["val_after"] >= patch.scores["val_before"]


def test_cli_optimize_with_a_dspy_optimizer_writes_the_spec_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from flowc.cli.main import main
    from flowc.testing.fake_server import FakeOpenAIServer, Reply

    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-for-tests")
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))

    def reply(body: dict[str, Any]) -> Reply:
        last = body["messages"][-1]["content"]
        if "Think about:" in last and "Notes:" not in last:
            return Reply(text="notes: " + last)
        text = "\n".join(m["content"] for m in body["messages"])
        return Reply(text="Paris" if "capital" in text.lower() else "dunno")

    with FakeOpenAIServer(default=reply) as srv:
        spec = tmp_path / "qa.flow"
        spec.write_text(QA_SPEC.replace('"fake/model"', f'"openai/fake" {{ api_base: "{srv.base_url}" }}'))
        data = tmp_path / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in QA_TRAIN))
        val = tmp_path / "val.jsonl"
        val.write_text("".join(json.dumps(r) + "\n" for r in QA_VAL))
        rc = main(
            [
                "optimize",
                str(spec),
                "-O",
                "dspy:BootstrapFewShotWithRandomSearch",
                "--data",
                str(data),
                "--val",
                str(val),
                "--set",
                "num_candidates=2",
                "--budget-calls",
                "300",
                "--run-dir",
                str(tmp_path / "run"),
            ]
        )
    assert rc == 0
    out = capsys.readouterr().out
    assert "validation exact_match: 0.000 → 1.000" in out
    optimized = (tmp_path / "qa.optimized.flow").read_text()
    assert "demo {" in optimized and flowc.compile(tmp_path / "qa.optimized.flow").name == "qa"
