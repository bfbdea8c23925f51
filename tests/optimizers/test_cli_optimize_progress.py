"""`flowc optimize` shows its progress events (plain lines in a log, a bar on a terminal), takes
--model, and on Ctrl-C prints the command that resumes the job."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from test_cli_optimize import SPEC, Fakes, install, optimize

from flowc.cli.progress import OptimizeProgress, event_status
from flowc.optimizers.budget import Budget
from flowc.optimizers.progress import ProgressEvent
from flowc.testing.optimizer_fakes import QA_TRAIN, QA_VAL


@pytest.fixture
def qa_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    (tmp_path / "qa.flow").write_text(SPEC)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_TRAIN))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_VAL))
    return tmp_path


def test_progress_lines_in_a_log(
    qa_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, Fakes())
    assert optimize(qa_project, "--run-dir", str(qa_project / "run")) == 0
    err = capsys.readouterr().err
    assert "textgrad baseline" in err and "textgrad step 1/2" in err and "textgrad step 2/2" in err
    assert "textgrad done after 2 step(s)" in err


def test_model_override_reaches_the_pipeline_client(
    qa_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = install(monkeypatch, Fakes())
    assert optimize(qa_project, "--run-dir", str(qa_project / "run"), "--model", "m=fake/other") == 0
    assert {c.model for lm in fakes.pipeline for c in lm.calls} == {"fake/other"}
    assert optimize(qa_project, "--model", "nope=fake/x", "--dry-run") == 1
    assert "overrides model 'nope'" in capsys.readouterr().err


def test_ctrl_c_prints_the_resume_command(
    qa_project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, Fakes(interrupt_after=7))
    run_dir = qa_project / "run"
    assert optimize(qa_project, "--run-dir", str(run_dir)) == 130
    err = capsys.readouterr().err
    assert f"every completed step is checkpointed in {run_dir}" in err
    assert f"--run-dir {run_dir} --resume" in err and "resume with: flowc optimize" in err


def event(kind: str, step: int, **kw: object) -> ProgressEvent:
    base: dict[str, object] = {
        "optimizer": "textgrad",
        "kind": kind,
        "step": step,
        "max_steps": 4,
        "spent": {"calls": 10.0 * step, "tokens": 1000.0 * step, "usd": 0.0, "seconds": 3.0},
        "budget": Budget(calls=100),
        "elapsed_s": 3.0 * step,
    }
    base.update(kw)
    return ProgressEvent(**base)  # type: ignore[arg-type]


def test_optimize_progress_bar_on_a_terminal() -> None:
    buf = io.StringIO()
    live = OptimizeProgress(Console(file=buf, force_terminal=True, width=160))
    with live:
        live(event("baseline", 0, val=0.4))
        live(event("step", 1, val=0.5, val_best=0.5, accepted=True, eta_s=9.0))
        live(event("end", 4, val_best=0.6))
    out = buf.getvalue()
    assert "textgrad" in out and "best 0.600" in out and "40 calls / 100 calls" in out
    assert event_status(event("step", 1, val_best=0.5, eta_s=9.0)).endswith("ETA 9s")


def test_optimize_progress_plain_lines_off_a_terminal() -> None:
    buf = io.StringIO()
    live = OptimizeProgress(Console(file=buf, force_terminal=False))
    with live:
        live(event("step", 1, val=0.5, val_best=0.5, accepted=True, eta_s=9.0))
    assert buf.getvalue().startswith("textgrad step 1/4") and "\x1b[" not in buf.getvalue()
