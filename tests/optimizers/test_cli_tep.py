"""`flowc optimize -O tep` in process, with the model clients replaced by deterministic fakes
(the fixtures of test_cli_optimize)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_optimize import SPEC, Fakes, install, optimize

from flowc.optimizers.base import ParamPatch
from flowc.testing.optimizer_fakes import HINT, QA_TRAIN, QA_VAL


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    (tmp_path / "qa.flow").write_text(SPEC)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_TRAIN))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_VAL))
    return tmp_path


def tep(project: Path, *extra: str) -> int:
    return optimize(project, *extra, optimizer="tep")


def test_dry_run_projects_tep_phases_and_spends_nothing(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = install(monkeypatch, Fakes())
    assert tep(project, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "tep on qa: 6 train / 2 val" in out and "projected LM calls" in out
    assert "critics" in out and "validation gate" in out and "updates (one retry)" in out
    assert fakes.calls() == 0 and not (project / "home" / "optimize").exists()


def test_tep_optimizes_and_writes_back(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, Fakes())
    run = project / "run"
    assert tep(project, "--run-dir", str(run), "-o", str(project / "out.flow")) == 0
    out = capsys.readouterr().out
    assert "validation exact_match: 0.000 → 1.000" in out
    new = (project / "out.flow").read_text()
    assert f'prompt: "{HINT} Think about: {{{{question}}}}"' in new and "# the drafting step" in new
    patch = ParamPatch.load(run / "patch.json")
    assert patch.optimizer == "tep" and set(patch.params) == {"draft.prompt", "answer.prompt"}
    settings = json.loads((run / "job.json").read_text())["settings"]
    # --steps caps each phase, --batch-size is the minibatch
    assert settings["t_free"] == 2 and settings["t_nudge"] == 2 and settings["batch_size"] == 2
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert {r["phase"] for r in rows} == {"free", "nudged"}


def test_set_reaches_any_setting(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install(monkeypatch, Fakes())
    run = project / "run"
    extra = ["--set", "beta0=0.2", "--set", "forward_signal=B", "--set", "actor_temperature=0.1,0.2"]
    assert tep(project, "--run-dir", str(run), *extra, "--set", "validate=false") == 0
    settings = json.loads((run / "job.json").read_text())["settings"]
    assert settings["beta0"] == 0.2 and settings["forward_signal"] == "B" and settings["validate"] is False
    assert settings["actor_temperature"] == [0.1, 0.2]


@pytest.mark.parametrize(
    ("pair", "message"),
    [("nope=1", "has no setting 'nope'"), ("beta0", "is not NAME=VALUE"), ("t_free=many", "not a valid int")],
)
def test_bad_set_is_an_error(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], pair: str, message: str
) -> None:
    fakes = install(monkeypatch, Fakes())
    assert tep(project, "--set", pair, "--dry-run") != 0
    err = capsys.readouterr().err
    assert message in err and "t_free" in err + pair
    assert fakes.calls() == 0


def test_budget_stops_tep(project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    fakes = install(monkeypatch, Fakes())
    assert tep(project, "--budget-calls", "9", "--run-dir", str(project / "run")) == 0
    out = capsys.readouterr().out
    assert "budget 9 calls" in out and "stopped by budget: calls" in out
    assert fakes.calls() <= 9


def test_interrupted_tep_job_resumes(
    project: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    full = install(monkeypatch, Fakes())
    assert tep(project, "-o", str(project / "full.flow"), "--run-dir", str(project / "full")) == 0
    total = full.calls()
    install(monkeypatch, Fakes(interrupt_after=11))
    run = ["--run-dir", str(project / "run"), "-o", str(project / "resumed.flow")]
    assert tep(project, *run) == 130  # Ctrl-C
    assert "interrupted" in capsys.readouterr().err
    resumed = install(monkeypatch, Fakes())
    assert tep(project, *run, "--resume") == 0
    assert resumed.calls() == total - 11  # journaled calls are not made again
    assert (project / "resumed.flow").read_text() == (project / "full.flow").read_text()
    a = ParamPatch.load(project / "full" / "patch.json")
    b = ParamPatch.load(project / "run" / "patch.json")
    assert a.params == b.params and a.budget_used["calls"] == b.budget_used["calls"]
    assert (project / "qa.flow").read_text() == SPEC
