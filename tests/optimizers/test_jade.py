"""JADE end to end on a random-init tiny model (seconds on a CPU): real rollouts through the
executor (scripted models answer), a real PPO step on a LoRA adapter, the adapter filed and served
by the patched pipeline; the conformance suite with its weight checks; resume after a kill to the
same adapter; the checks; progress events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("jax")

import flowc
from flowc.errors import FlowcError
from flowc.optimizers.base import Optimizer
from flowc.optimizers.budget import Budget
from flowc.optimizers.jade import Jade
from flowc.optimizers.progress import ProgressEvent, render_line
from flowc.optimizers.scoring import metric_from_spec
from flowc.runtime.lm import LMClient, LMRequest
from flowc.testing.contracts import WeightOptimizerContract, trained_pipeline_answer
from flowc.testing.optimizer_fakes import (
    QA_SPEC,
    QA_TRAIN,
    QA_VAL,
    FunctionLM,
    KillSwitch,
    SimulatedKill,
    fake_optimizer_answer,
)

SMALL = {
    "rounds": 1,
    "weight_steps": 2,
    "prompt_steps": 1,
    "batch_size": 2,
    "group_size": 2,
    "minibatch": 4,
    "micro_batch": 2,
    "learning_rate": 0.05,
    "lora_rank": 2,
    "lora_alpha": 4.0,
    "max_prompt_tokens": 200,
}


def varied_answer(request: LMRequest) -> str:
    """`trained_pipeline_answer`, but the answer step's reply depends on the sampling seed, so the
    rollouts of one question differ and the group baseline has something to compare."""
    base = trained_pipeline_answer(request)
    if "Notes:" in request.messages[-1].content and request.seed is not None and request.seed % 2:
        return "Paris, I believe, in France"
    return base


def jade(lm: LMClient, critic: LMClient | None = None, **changes: Any) -> Jade:
    settings = {**SMALL, **changes}
    return Jade(
        pipeline_lm=lm,
        optimizer_lm=critic or FunctionLM(fake_optimizer_answer),
        optimizer_model="fake/critic",
        **settings,
    )


@pytest.fixture
def compiled(tiny_gguf: Path) -> flowc.CompiledPipeline:
    model = f"local/gguf:{tiny_gguf}"
    return flowc.compile(
        QA_SPEC.replace('model m = "fake/model"', f'model m = "{model}" {{\n    trainable: true\n  }}')
    )


def optimize(opt: Jade, compiled: flowc.CompiledPipeline, run_dir: Path, budget: Budget | None = None) -> Any:
    return opt.optimize(
        compiled,
        trainset=list(QA_TRAIN),
        valset=list(QA_VAL),
        metric=metric_from_spec(compiled),
        budget=budget or Budget(calls=10_000),
        seed=0,
        run_dir=run_dir,
    )


def test_one_round_trains_serves_and_co_adapts_the_prompts(compiled: flowc.CompiledPipeline, tmp_path: Path) -> None:
    events: list[ProgressEvent] = []
    lm = FunctionLM(varied_answer)
    opt = jade(lm, progress=events.append)
    patch = optimize(opt, compiled, tmp_path / "run")
    state = json.loads((tmp_path / "run" / "state.json").read_text())
    curve = state["curve"]
    assert [row["update"] for row in curve] == [1, 2]
    assert all(row["transitions"] == 8 for row in curve)  # 2 questions × 2 rollouts × (draft, answer)
    assert curve[0]["ratio"] == pytest.approx(1.0, abs=1e-4)  # old log-probs are the policy's own
    # the adapter was trained (its B matrices moved off zero) and the patch names it
    from flowc.backbone.checkpoint import load_adapter

    value = patch.params["m.weights"]
    lora, _, info = load_adapter(value["path"])
    assert any(np.abs(part["b"]).max() > 0 for part in lora.values())
    assert info["extra"]["optimizer"] == "jade"
    assert patch.scores["val_after"] > patch.scores["val_before"] and patch.scores["ppo_updates"] == 2
    # rollouts were sampled (temperature 1, a seed per rollout) without the grammar; validation was not
    rollouts = [r for r in lm.calls if r.temperature == 1.0]
    assert rollouts and {r.seed for r in rollouts} and all(r.constraint is None for r in rollouts)
    assert all(r.temperature == 0.0 for r in lm.calls if r.messages[-1].content.startswith("Notes:") and r.seed is None)
    # the second update's rollouts were served with the first update's adapter
    assert any(r.adapter is not None and r.temperature == 1.0 for r in lm.calls)
    # the prompt round ran TextGrad on the pipeline served with the kept adapter
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log if r["event"] == "ppo"] == ["ppo", "ppo"]
    assert any(r["event"] in ("update", "step") and r["step"] == 3 for r in log)
    buffer = [json.loads(x) for x in (tmp_path / "run" / "jade" / "buffer-step1.jsonl").read_text().splitlines()]
    assert {b["node"] for b in buffer} == {"draft", "answer"} and all("advantage" in b for b in buffer)
    # progress: reward, loss, KL and tokens/s on the terminal line of a weight step
    step1 = next(e for e in events if e.kind == "step" and e.step == 1)
    line = render_line(step1)
    assert "[weights r1]" in line and "reward" in line and "loss" in line and "kl" in line and "tok/s" in line
    assert step1.max_steps == 3


def test_resume_after_a_kill_in_the_middle_of_training_ends_with_the_same_adapter(
    compiled: flowc.CompiledPipeline, tmp_path: Path
) -> None:
    full = optimize(jade(FunctionLM(varied_answer), prompt_steps=0), compiled, tmp_path / "full")
    calls = json.loads((tmp_path / "full" / "state.json").read_text())["_journal_entries"][0]
    # killed after the first update's rollouts and before its validation: step 2's training is lost
    switch = KillSwitch(after=calls - 1)
    with pytest.raises(SimulatedKill):
        optimize(jade(switch.wrap(FunctionLM(varied_answer)), prompt_steps=0), compiled, tmp_path / "killed")
    fresh = FunctionLM(varied_answer)
    resumed = optimize(jade(fresh, prompt_steps=0, resume=True), compiled, tmp_path / "killed")
    assert resumed.params["m.weights"]["sha256"] == full.params["m.weights"]["sha256"]
    assert len(fresh.calls) == 1  # only the call the kill interrupted


def test_checks(compiled: flowc.CompiledPipeline, tmp_path: Path) -> None:
    plain = flowc.compile(QA_SPEC)
    with pytest.raises(FlowcError, match="trainable local model"):
        optimize(jade(FunctionLM(trained_pipeline_answer)), plain, tmp_path / "a")
    with pytest.raises(FlowcError, match="group baseline needs at least 2"):
        optimize(jade(FunctionLM(trained_pipeline_answer), group_size=1), compiled, tmp_path / "b")
    with pytest.raises(FlowcError, match="'advantage' is 'critic'") as e:
        optimize(jade(FunctionLM(trained_pipeline_answer), advantage="critic"), compiled, tmp_path / "c")
    assert "--set advantage=group" in str(e.value)
    with pytest.raises(FlowcError, match="'rollout_engine' is 'gpu'") as e:
        optimize(jade(FunctionLM(trained_pipeline_answer), rollout_engine="gpu"), compiled, tmp_path / "d")
    assert "--set rollout_engine=auto" in str(e.value)
    with pytest.raises(FlowcError, match="jax rollout engine samples without a grammar"):  # it would ignore it
        jade(FunctionLM(trained_pipeline_answer), grammar=True, rollout_engine="jax").preflight(
            compiled, metric_from_spec(compiled)
        )


def _preflight(opt: Jade, spec: Path) -> None:
    compiled = flowc.compile(spec)
    opt.preflight(compiled, metric_from_spec(compiled))


def test_nothing_to_train_names_the_model_and_its_fix(tiny_gguf: Path, tmp_path: Path) -> None:
    spec = tmp_path / "qa.flow"
    lm = FunctionLM(trained_pipeline_answer)
    # a local model without `trainable: true`: the error points at it and says what to add
    spec.write_text(QA_SPEC.replace('"fake/model"', f'"local/gguf:{tiny_gguf}"'))
    with pytest.raises(FlowcError, match="trainable local model") as e:
        _preflight(jade(lm), spec)
    span = e.value.diagnostic.span
    assert span is not None and span.path == str(spec)
    assert 'model m = "local/gguf:' in spec.read_text().splitlines()[span.line - 1]
    assert "add 'trainable: true' to model 'm'" in (e.value.hint or "")
    # only remote models: the fix is a local backbone
    spec.write_text(QA_SPEC)
    with pytest.raises(FlowcError, match="trainable local model") as e:
        _preflight(jade(lm), spec)
    assert "local/smollm2" in (e.value.hint or "")
    # trainable, but frozen on the command line
    trainable = f'model m = "local/gguf:{tiny_gguf}" {{ trainable: true }}'
    spec.write_text(QA_SPEC.replace('model m = "fake/model"', trainable))
    with pytest.raises(FlowcError, match="--only/--freeze leave no weights") as e:
        _preflight(Jade(pipeline_lm=lm, optimizer_lm=lm, frozen=["m.weights"]), spec)
    assert e.value.diagnostic.span is not None and "out of --freeze" in (e.value.hint or "")


def test_unknown_settings_list_only_real_settings_and_suggest_the_closest() -> None:
    from flowc.optimizers.factory import parse_settings, settable

    names = settable(Jade)
    assert "learning_rate" in names and "rollout_engine" in names
    assert not [n for n in names if n.startswith("_") or n in ("name", "param_kinds", "pipeline_lm")]
    with pytest.raises(FlowcError, match="has no setting 'lora_ranks'") as e:
        parse_settings("jade", ["lora_ranks=4"])
    assert "did you mean 'lora_rank'?" in (e.value.hint or "")
    for private in ("_loaded=1", "name=x"):  # internal state and class constants are not settings
        with pytest.raises(FlowcError, match="has no setting"):
            parse_settings("jade", [private])


def test_a_dry_run_refuses_a_job_that_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from test_cli_optimize import Fakes, install

    from flowc.cli import main

    fakes = install(monkeypatch, Fakes())
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    (tmp_path / "qa.flow").write_text(QA_SPEC)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_TRAIN))
    argv = ["optimize", str(tmp_path / "qa.flow"), "-O", "jade", "--data", str(tmp_path / "train.jsonl"), "--dry-run"]
    assert main(argv) != 0
    captured = capsys.readouterr()
    assert "trainable local model" in captured.err and f"{tmp_path / 'qa.flow'}:" in captured.err
    assert "projected LM calls" not in captured.out and fakes.calls() == 0


def test_a_time_budget_stops_between_rollouts_and_training(compiled: flowc.CompiledPipeline, tmp_path: Path) -> None:
    patch = optimize(jade(FunctionLM(varied_answer)), compiled, tmp_path / "run", budget=Budget(seconds=0.0))
    assert patch.stopped_by == "budget: seconds" and patch.params == {}


class TestJadeContract(WeightOptimizerContract):
    @pytest.fixture
    def base_model(self, tiny_gguf: Path) -> str:
        return f"local/gguf:{tiny_gguf}"

    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> Optimizer:
        return Jade(
            pipeline_lm=pipeline_lm,
            optimizer_lm=optimizer_lm,
            optimizer_model="fake/critic",
            resume=resume,
            **{**SMALL, "weight_steps": 1, "group_size": 1, "advantage": "batch"},
        )


def test_the_jax_engine_samples_rollouts_from_the_policy_itself(tiny_gguf: Path, tmp_path: Path) -> None:
    spec = QA_SPEC.replace(
        'model m = "fake/model"', f'model m = "local/gguf:{tiny_gguf}" {{\n    trainable: true\n    max_tokens: 6\n  }}'
    )
    compiled = flowc.compile(spec)
    lm = FunctionLM(trained_pipeline_answer)
    opt = jade(lm, rollout_engine="jax", prompt_steps=0, weight_steps=1)
    patch = optimize(opt, compiled, tmp_path / "run")
    assert not any(r.temperature == 1.0 for r in lm.calls), "rollouts went to the runtime's model"
    buffer = [json.loads(x) for x in (tmp_path / "run" / "jade" / "buffer-step1.jsonl").read_text().splitlines()]
    assert len(buffer) == 8 and {b["node"] for b in buffer} == {"draft", "answer"}
    journal = (tmp_path / "run" / "journal-pipeline.jsonl").read_text()
    assert journal.count('"node": "answer"') >= 4  # the jax replies are journaled like any call
    assert "m.weights" in patch.params


@pytest.mark.integration
def test_rollouts_sampled_by_llama_cpp_train_an_adapter_it_then_serves(tiny_gguf: Path, tmp_path: Path) -> None:
    """The CPU path for real: rollouts sampled by the embedded llama.cpp (temperature 1, no grammar),
    PPO in jax, the adapter served by llama.cpp for the next rollouts and for the patched pipeline."""
    pytest.importorskip("xllamacpp")
    from flowc.runtime.session import default_client, open_executor

    spec = QA_SPEC.replace(
        'model m = "fake/model"', f'model m = "local/gguf:{tiny_gguf}" {{\n    trainable: true\n    max_tokens: 6\n  }}'
    )
    compiled = flowc.compile(spec)
    opt = jade(default_client(compiled), prompt_steps=0, weight_steps=2, batch_size=1, rollout_engine="llamacpp")
    patch = optimize(opt, compiled, tmp_path / "run")
    buffers = [
        [json.loads(x) for x in (tmp_path / "run" / "jade" / f"buffer-step{k}.jsonl").read_text().splitlines()]
        for k in (1, 2)
    ]
    replies = [b["completion"] for b in buffers[0] if b["node"] == "draft"]
    assert len(replies) == 2 and replies[0] != replies[1], "the group's rollouts were not sampled"
    journal = [json.loads(x) for x in (tmp_path / "run" / "journal-pipeline.jsonl").read_text().splitlines()]
    assert len(journal) >= 8
    result = open_executor(patch.apply(compiled), cache=False, store=False).run_sync(
        {"question": "Where is the Louvre?"}
    )
    assert result.status == "ok" and [c.node for c in result.lm_calls] == ["draft", "answer"]
