"""`flowc optimize -O poqd` refuses what the job would refuse before it spends anything, `--dry-run`
included, and names the place to fix: a pipeline without POQD's parts (file:line:col of the spec),
an optimizer setting that does not exist (the class's ClassVars are not settings), a bad value."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _poqd_fixtures import TRAIN, VAL, optimizer_answer, pipeline_answer, write_project

from flowc.errors import FlowcError
from flowc.optimizers.factory import optimizer_fields, parse_settings
from flowc.testing.optimizer_fakes import FunctionLM


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("flowc.runtime.session.default_client", lambda *a, **k: FunctionLM(pipeline_answer))
    monkeypatch.setattr("flowc.runtime.client.ModelClient", lambda *a, **k: FunctionLM(optimizer_answer))
    reader = tmp_path / "reader.gguf"
    reader.write_bytes(b"")
    spec = write_project(tmp_path / "project", reader)
    for name, data in (("train", TRAIN), ("val", VAL)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in data))
    return spec


def dry_run(project: Path, *extra: str) -> list[str]:
    data = project.parent.parent
    files = ["--data", str(data / "train.jsonl"), "--val", str(data / "val.jsonl")]
    return ["optimize", str(project), "-O", "poqd", *files, "--dry-run", *extra]


@pytest.mark.parametrize(
    ("edit", "message", "at"),
    [
        ([("    trainable: true\n", "")], "which is not trainable", "reader"),
        ([("    filter_subqueries: true\n", ""), ("    query <- question\n", "")], "does not filter", "search"),
    ],
)
def test_a_dry_run_refuses_a_pipeline_the_job_would_refuse(
    project: Path, capsys: pytest.CaptureFixture[str], edit: list[tuple[str, str]], message: str, at: str
) -> None:
    from flowc.cli.main import main

    text = project.read_text()
    assert main(dry_run(project)) == 0  # the pipeline as written passes
    for old, new in edit:
        assert old in text
        text = text.replace(old, new)
    project.write_text(text)
    assert main(dry_run(project)) != 0
    err = capsys.readouterr().err
    assert message in err and "hint:" in err
    where = err.split(": error[")[0].splitlines()[-1]
    path, line, col = where.rsplit(":", 2)
    assert path == str(project)
    assert project.read_text().splitlines()[int(line) - 1][int(col) - 1 :].startswith(at)


def test_classvars_are_not_settings() -> None:
    from flowc.optimizers.poqd import POQD

    assert {"alpha", "tau", "kappa"} <= set(optimizer_fields(POQD))
    assert not {"name", "param_kinds", "step_fields", "needs_params"} & set(optimizer_fields(POQD))
    with pytest.raises(FlowcError) as e:
        parse_settings("poqd", ["name=x"])
    assert "has no setting 'name'" in str(e.value) and "param_kinds" not in (e.value.hint or "")


@pytest.mark.parametrize(
    ("setting", "message"),
    [("kappa=0", "kappa must be at least 1"), ("alpha=-1", "alpha >= 0"), ("tau=three", "not a valid int")],
)
def test_a_bad_setting_is_refused_with_the_fix(
    project: Path, capsys: pytest.CaptureFixture[str], setting: str, message: str
) -> None:
    from flowc.cli.main import main

    assert main(dry_run(project, "--set", setting)) != 0
    err = capsys.readouterr().err
    assert message in err and "hint:" in err and setting.split("=")[0] in err.split("hint:")[1]
