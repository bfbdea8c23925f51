"""A spec is untrusted input: what it can make flowc read and show (docs/security.md cites these)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import flowc
from flowc.cli.main import main
from flowc.errors import FlowcError, SpecErrors
from flowc.spec.paths import project_root
from flowc.spec.template import render

SECRET = "sk-test-0123456789abcdef"
QA = "pipeline p {\n  input question: str\n  output answer: str <- question\n}\n"
RAG = """pipeline p {{
  input question: str
  output docs: list[Doc] <- search.docs
  corpus notes = "{path}"
  node search: retrieve {{
    corpus: notes
    query <- question
  }}
}}
"""
DOC = '{"id": "1", "title": "t", "text": "private notes"}\n'


def errors_of(path: Path, **kw: object) -> list[tuple[str, str]]:
    try:
        flowc.compile(str(path), **kw)  # type: ignore[arg-type]
    except SpecErrors as e:
        return [(d.code, d.message) for d in e.errors]
    return []


# -- files that are not specs are never shown ------------------------------------------------------


def test_check_does_not_print_a_file_that_is_not_a_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    environ = tmp_path / "environ"
    environ.write_bytes(f"OPENAI_API_KEY={SECRET}\0HOME=/home/me\0".encode())
    assert main(["check", str(environ)]) == 1
    err = capsys.readouterr().err
    assert "error[not-a-spec]" in err and str(environ) in err
    assert SECRET not in err and "HOME=" not in err and "OPENAI_API_KEY" not in err


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="no /proc")
def test_check_of_proc_self_environ_names_it_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWC_PROBE_API_KEY", SECRET)  # not in /proc/self/environ (set after start), but scrubbed
    assert main(["check", "/proc/self/environ"]) == 1
    err = capsys.readouterr().err
    assert "error[not-a-spec]" in err
    assert "PATH=" not in err and os.environ.get("PATH", "PATH=") not in err


def test_an_import_of_a_non_spec_inside_the_project_is_reported_at_the_import(tmp_path: Path) -> None:
    (tmp_path / "keys.txt").write_text(f"token: {SECRET}\n")
    (tmp_path / "secrets.yaml").write_text(f"api_key: {SECRET}\n")
    spec = tmp_path / "spec.flow"
    spec.write_text('import "keys.txt" as k\nimport "secrets.yaml" as s\n' + QA)
    with pytest.raises(SpecErrors) as info:
        flowc.compile(str(spec))
    assert [d.code for d in info.value.errors] == ["not-a-spec", "not-a-spec"]
    assert all(d.span is not None and d.span.path == str(spec) for d in info.value.errors)
    assert SECRET not in info.value.render()


# -- every diagnostic is scrubbed like model errors --------------------------------------------------


def test_diagnostics_are_scrubbed_of_secret_environment_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", SECRET)
    in_excerpt = tmp_path / "spec.flow"  # the secret on the line an error quotes
    in_excerpt.write_text(QA.replace("output answer", f'role: "{SECRET}"\n  output answer'))
    in_message = tmp_path / "spec.yaml"  # the secret in the message itself (an unknown key)
    in_message.write_text(f'pipeline: p\n"{SECRET}": 1\n')
    for path in (in_excerpt, in_message):
        assert main(["check", str(path)]) == 1
        err = capsys.readouterr().err
        assert "***" in err and SECRET not in err, err
    error = FlowcError("file-not-found", f"no file {SECRET}", hint=SECRET)
    assert SECRET not in str(error) and SECRET not in error.args[0] and SECRET not in error.diagnostic.render()


# -- paths stay inside the project unless allowed ----------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "notes.jsonl").write_text(DOC)
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "notes.jsonl").write_text(DOC)
    return proj


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_a_corpus_outside_the_project_is_refused(project: Path, how: str) -> None:
    outside = project.parent / "outside" / "notes.jsonl"
    if how == "symlink":
        (project / "data" / "link.jsonl").symlink_to(outside)  # inside by name, outside once resolved
    written = {"absolute": str(outside), "dotdot": "../outside/notes.jsonl", "symlink": "data/link.jsonl"}[how]
    spec = project / "rag.flow"
    spec.write_text(RAG.format(path=written))
    [(code, message)] = errors_of(spec)
    assert code == "path-outside-project" and str(project) in message
    assert errors_of(spec, allow_paths=[outside.parent]) == []  # allowed in Python
    assert main(["check", "-q", str(spec), "--allow-path", str(outside.parent)]) == 0  # and on the command line


def test_an_import_outside_the_project_is_refused(project: Path) -> None:
    (project.parent / "outside" / "qa.flow").write_text(QA)
    spec = project / "spec.flow"
    spec.write_text('import "../outside/qa.flow" as qa\n' + QA)
    assert [c for c, _ in errors_of(spec)] == ["path-outside-project"]


def test_the_project_root_is_the_nearest_flowc_toml_or_git(project: Path) -> None:
    sub = project / "specs"
    sub.mkdir()
    spec = sub / "rag.flow"
    spec.write_text(RAG.format(path="../data/notes.jsonl"))
    assert project_root(sub) == sub.resolve()  # no marker: the spec's own folder
    assert [c for c, _ in errors_of(spec)] == ["path-outside-project"]
    (project / "flowc.toml").write_text("")
    assert project_root(sub) == project.resolve()
    assert errors_of(spec) == []
    (project / "flowc.toml").unlink()
    (project / ".git").mkdir()
    assert project_root(sub) == project.resolve()


def test_check_reports_a_missing_corpus(project: Path) -> None:
    spec = project / "rag.flow"
    spec.write_text(RAG.format(path="data/missing.jsonl"))
    assert [c for c, _ in errors_of(spec)] == ["corpus-not-found"]


# -- templates read data, not Python objects -----------------------------------------------------------


def test_template_fields_are_mapping_keys_only() -> None:
    assert render("[{{q.__class__}}][{{q.__doc__}}][{{q.upper}}]", {"q": "text"}) == "[][][]"
    assert render("{{p.name}} ({{p.age}})", {"p": {"name": "Ada", "age": 36}}) == "Ada (36)"
