"""`flowc optimize` in process, with the model clients replaced by deterministic fakes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowc.cli.main import main
from flowc.optimizers.base import ParamPatch
from flowc.runtime.lm import LMClient, LMRequest, LMResponse
from flowc.testing.optimizer_fakes import HINT, QA_TRAIN, QA_VAL, FunctionLM, fake_optimizer_answer, qa_pipeline_answer

SPEC = """\
# A question-answering pipeline (this comment must survive write-back).
pipeline qa {
  input question: str
  output answer: str <- answer.answer
  model m = "fake/model"

  # the drafting step
  node draft: llm {
    prompt: "Think about: {{question}}"
    question <- question
    output notes: str
  }
  node answer: llm {
    prompt: "Notes: {{notes}} Q: {{question}}"  # trailing comment
    question <- question
    notes <- draft.notes
    output answer: str
  }
  metric em: exact_match(output = answer, target = answer)
}
"""


class Fakes:
    """The clients the CLI builds, replaced: every pipeline client and optimizer client it makes."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.pipeline: list[FunctionLM] = []
        self.optimizer: list[FunctionLM] = []
        self.interrupt_after = interrupt_after
        self.answered = 0

    def calls(self) -> int:
        return sum(len(x.calls) for x in self.pipeline + self.optimizer)

    def wrap(self, lm: FunctionLM) -> LMClient:
        fakes = self

        class Interruptible:
            async def complete(self, request: LMRequest) -> LMResponse:
                if fakes.interrupt_after is not None and fakes.answered >= fakes.interrupt_after:
                    raise KeyboardInterrupt  # Ctrl-C
                fakes.answered += 1
                return await lm.complete(request)

        return Interruptible()

    def default_client(self, compiled: Any, **kwargs: Any) -> LMClient:
        lm = FunctionLM(qa_pipeline_answer)
        self.pipeline.append(lm)
        return self.wrap(lm)

    def litellm_client(self, *args: Any, **kwargs: Any) -> LMClient:
        lm = FunctionLM(fake_optimizer_answer)
        self.optimizer.append(lm)
        return self.wrap(lm)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    (tmp_path / "qa.flow").write_text(SPEC)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_TRAIN))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_VAL))
    return tmp_path


def install(monkeypatch: pytest.MonkeyPatch, fakes: Fakes) -> Fakes:
    monkeypatch.setattr("flowc.runtime.session.default_client", fakes.default_client)
    monkeypatch.setattr("flowc.runtime.client.ModelClient", fakes.litellm_client)
    return fakes


def optimize(project: Path, *extra: str, optimizer: str = "textgrad") -> int:
    return main(
        [
            "optimize",
            str(project / "qa.flow"),
            "-O",
            optimizer,
            "--data",
            str(project / "train.jsonl"),
            "--val",
            str(project / "val.jsonl"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            *extra,
        ]
    )


def test_dry_run_spends_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = install(monkeypatch, Fakes())
    assert optimize(project, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "projected LM calls" in out and "6 train / 2 val" in out and "backward (feedback)" in out
    assert fakes.calls() == 0
    assert not (project / "home" / "optimize").exists() and not (project / "qa.optimized.flow").exists()


def test_optimize_writes_the_prompt_in_place_and_prints_a_diff(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, Fakes())
    out_file = project / "out.flow"
    assert optimize(project, "-o", str(out_file), "--run-dir", str(project / "run")) == 0
    out = capsys.readouterr().out
    new = out_file.read_text()
    # the prompts are edited in place: comments and layout kept, nothing else changed
    assert "# A question-answering pipeline (this comment must survive write-back)." in new
    assert "# the drafting step" in new and "# trailing comment" in new
    # one hint: once the pipeline answers the training examples right, the second step has nothing to fix
    assert f'prompt: "{HINT} Notes: {{{{notes}}}} Q: {{{{question}}}}"  # trailing comment' in new
    changed = [(a, b) for a, b in zip(SPEC.splitlines(), new.splitlines(), strict=True) if a != b]
    assert len(changed) == 2 and all("prompt:" in a for a, _ in changed)
    assert f"--- a/{project / 'qa.flow'}" in out and f"+++ b/{project / 'qa.flow'}" in out
    assert '-    prompt: "Think about: {{question}}"' in out and f'+    prompt: "{HINT} Think about:' in out
    assert "validation exact_match: 0.000 → 1.000" in out
    patch = ParamPatch.load(project / "run" / "patch.json")
    assert set(patch.params) == {"draft.prompt", "answer.prompt"}
    assert (project / "qa.flow").read_text() == SPEC  # the source itself is untouched without --write


def test_default_output_path_and_write(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, Fakes())
    assert optimize(project) == 0
    assert HINT in (project / "qa.optimized.flow").read_text()
    assert (project / "home" / "optimize" / "qa-textgrad" / "patch.json").exists()
    install(monkeypatch, Fakes())
    assert optimize(project, "--write", "--run-dir", str(project / "run2")) == 0
    assert HINT in (project / "qa.flow").read_text()


def test_budget_stops_the_job(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = install(monkeypatch, Fakes())
    assert optimize(project, "--budget-calls", "5", "--run-dir", str(project / "run")) == 0
    out = capsys.readouterr().out
    assert "budget 5 calls" in out and "stopped by budget: calls" in out
    assert fakes.calls() <= 5


def test_interrupted_job_resumes(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = install(monkeypatch, Fakes())
    assert optimize(project, "-o", str(project / "full.flow"), "--run-dir", str(project / "full")) == 0
    total = full.calls()

    install(monkeypatch, Fakes(interrupt_after=7))
    run = ["--run-dir", str(project / "run"), "-o", str(project / "resumed.flow")]
    assert optimize(project, *run) == 130  # Ctrl-C
    assert "interrupted" in capsys.readouterr().err
    install(monkeypatch, Fakes())
    assert optimize(project, *run) != 0  # the directory holds a job: --resume or another --run-dir
    assert "already holds an optimization job" in capsys.readouterr().err
    resumed = install(monkeypatch, Fakes())
    assert optimize(project, *run, "--resume") == 0
    assert resumed.calls() == total - 7  # journaled calls are not made again
    assert (project / "resumed.flow").read_text() == (project / "full.flow").read_text()
    a = ParamPatch.load(project / "full" / "patch.json")
    b = ParamPatch.load(project / "run" / "patch.json")
    assert a.params == b.params and a.budget_used["calls"] == b.budget_used["calls"]


def test_bootstrap_from_the_cli(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, Fakes())
    assert optimize(project, "--run-dir", str(project / "run"), optimizer="bootstrap") == 0
    out = capsys.readouterr().out
    patch = ParamPatch.load(project / "run" / "patch.json")
    assert set(patch.params) == {"draft.demos", "answer.demos"}
    assert "demo {question:" in (project / "qa.optimized.flow").read_text()  # demos: the canonical printer
    assert "validation exact_match: 0.000 → 1.000" in out


def test_unknown_optimizer(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    install(monkeypatch, Fakes())
    assert optimize(project, optimizer="textgard") != 0
    assert "did you mean 'textgrad'" in capsys.readouterr().err


def test_pipeline_and_optimizer_clients_share_rate_limits(tmp_path: Path) -> None:
    """The optimizer's client gets the spec's policies and the pipeline client's limiter registry,
    so a declared rpm/tpm holds across both (they used to count separately)."""
    import argparse

    import flowc
    from flowc.cli.optimize_commands import build_optimizer

    compiled = flowc.compile(SPEC.replace('"fake/model"', '"openai/gpt-4o-mini" { rpm: 30 }'))
    args = argparse.Namespace(
        optimizer_model=None, only=None, freeze="", resume=False, steps=None, batch_size=None, set=[]
    )
    opt, model = build_optimizer("textgrad", compiled, args)
    assert model == "openai/gpt-4o-mini"
    assert opt.pipeline_lm.limiters is opt.optimizer_lm.limiters
    assert opt.optimizer_lm.limiters.get(model) is not None  # the spec's rpm applies to it too
