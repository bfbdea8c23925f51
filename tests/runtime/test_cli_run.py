"""`flowc run | eval | runs | trace` in-process, with a fake model client and FLOWC_HOME in tmp_path."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import flowc
import flowc.runtime.session as session
from flowc.cli.main import main
from flowc.runtime.executor import Executor
from flowc.runtime.fakes import EchoLM
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.store import RunStore

pytestmark = pytest.mark.timeout(60)

SPEC = """
pipeline cli_demo {
  input question: str
  input words: int = 1
  output answer: str <- answer.answer
  model m = "openai/fake"
  node answer: llm {
    prompt: "Answer {{question}} in {{words}} words"
    question <- question
    words <- words
    output answer: str
  }
}
"""


class Clients:
    """Stands in for `session.default_client`: a fresh EchoLM per command, all kept for counting."""

    def __init__(self) -> None:
        self.made: list[EchoLM] = []

    def __call__(self, compiled: Any) -> EchoLM:
        lm = EchoLM(last_user_only=True)
        self.made.append(lm)
        return lm

    @property
    def calls(self) -> int:
        return sum(len(lm.calls) for lm in self.made)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


@pytest.fixture
def clients(monkeypatch: pytest.MonkeyPatch) -> Clients:
    c = Clients()
    monkeypatch.setattr(session, "default_client", c)
    return c


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "demo.flow"
    p.write_text(SPEC)
    return p


def flowc_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_ids(home: Path) -> list[str]:
    return [r["id"] for r in RunStore(home / "runs.sqlite").list_runs()]


def test_run_with_inputs(home: Path, clients: Clients, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = flowc_cli(capsys, "run", str(spec), "--input", "question=What is up?", "-i", "words=3")
    assert code == 0, err
    assert "answer: Answer What is up? in 3 words" in out
    assert "path: answer" in out
    (rid,) = run_ids(home)
    assert f"run {rid}: 1 LM call(s) (0 cached)" in out
    assert clients.calls == 1
    # the same run again is answered from the response cache under FLOWC_HOME
    code, out, _ = flowc_cli(capsys, "run", str(spec), "-i", "question=What is up?", "-i", "words=3")
    assert code == 0 and "1 LM call(s) (1 cached)" in out and clients.calls == 1
    code, out, _ = flowc_cli(capsys, "run", str(spec), "-i", "question=What is up?", "-i", "words=3", "--no-cache")
    assert code == 0 and "(0 cached)" in out and clients.calls == 2


def test_run_with_input_file_trace_and_json(
    home: Path, clients: Clients, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = tmp_path / "in.json"
    inputs.write_text(json.dumps({"question": "Why?", "words": 2}))
    code, out, _ = flowc_cli(capsys, "run", str(spec), "--input-file", str(inputs), "--trace")
    assert code == 0
    assert "[0] answer (llm)" in out
    assert "in  question = Why?" in out and "in  words = 2" in out
    assert "lm  openai/fake:" in out
    assert "out answer = Answer Why? in 2 words" in out
    # --input overrides the file
    code, out, _ = flowc_cli(capsys, "run", str(spec), "--input-file", str(inputs), "-i", "words=5", "--json")
    assert code == 0
    result = json.loads(out)
    assert result["status"] == "ok" and result["outputs"] == {"answer": "Answer Why? in 5 words"}
    assert result["inputs"] == {"question": "Why?", "words": 5}
    assert [s["node"] for s in result["steps"]] == ["answer"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ((), "input 'question' (str) is required"),
        (("-i", "question=q", "-i", "words=many"), "input 'words' should be int"),
        (("-i", "question=q", "-i", "colour=red"), "'colour' is not an input of 'cli_demo'"),
        (("-i", "question"), "--input 'question' is not KEY=VALUE"),
        (("--input-file", "missing.json"), "cannot read inputs from 'missing.json'"),
        (("--input-file", "list.json"), "holds a JSON list, not an object of inputs"),
    ],
)
def test_bad_inputs_exit_1_with_a_clear_error(
    home: Path,
    clients: Clients,
    spec: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    (tmp_path / "list.json").write_text('["q"]')
    code, _, err = flowc_cli(capsys, "run", str(spec), *argv)
    assert code == 1
    assert message in err
    assert "Traceback" not in err
    assert clients.calls == 0


def test_missing_spec_file_exits_2(home: Path, clients: Clients, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = flowc_cli(capsys, "run", "nowhere.flow", "-i", "question=q")
    assert code == 2 and "nowhere.flow" in err and "file-not-found" in err


def test_unknown_flag_is_a_usage_error(home: Path, clients: Clients, spec: Path) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run", str(spec), "--frobnicate"])
    assert e.value.code == 2


def test_runs_and_trace(home: Path, clients: Clients, spec: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = flowc_cli(capsys, "runs")
    assert code == 0 and "no runs yet" in out
    flowc_cli(capsys, "run", str(spec), "-i", "question=first")
    flowc_cli(capsys, "run", str(spec), "-i", "question=second", "-i", "words=x")  # fails: bad input
    ids = run_ids(home)
    assert len(ids) == 2
    code, out, _ = flowc_cli(capsys, "runs")
    assert code == 0 and all(i in out for i in ids) and "cli_demo" in out
    assert "error" in out and "ok" in out

    ok_id = next(r["id"] for r in RunStore(home / "runs.sqlite").list_runs() if r["status"] == "ok")
    code, out, _ = flowc_cli(capsys, "trace", ok_id[:5])
    assert code == 0
    assert f"run {ok_id} of cli_demo" in out and ": ok" in out
    assert "[0] answer (llm)" in out and "answer: Answer first in 1 words" in out
    code, out, _ = flowc_cli(capsys, "trace", ok_id, "--json")
    assert code == 0 and json.loads(out)["run_id"] == ok_id

    code, _, err = flowc_cli(capsys, "trace", "zzzz")
    assert code == 1 and "run-not-found" in err


class Killed(BaseException):
    pass


class DiesOnSecondCall:
    def __init__(self) -> None:
        self.n = 0

    async def complete(self, req: LMRequest) -> LMResponse:
        self.n += 1
        if self.n == 2:
            raise Killed()
        return LMResponse(text="step one", model=req.model)


def test_trace_of_a_killed_run_says_it_did_not_finish(
    home: Path, clients: Clients, capsys: pytest.CaptureFixture[str]
) -> None:
    two_steps = SPEC.replace("output answer: str <- answer.answer", "output answer: str <- again.answer").replace(
        "\n}\n",
        '\n  node again: llm {\n    prompt: "Again: {{a}}"\n    a <- answer.answer\n    output answer: str\n  }\n}\n',
    )
    ex = Executor(flowc.compile(two_steps), lm=DiesOnSecondCall(), store=RunStore(home / "runs.sqlite"))
    with pytest.raises(Killed):
        asyncio.run(ex.run({"question": "q"}, run_id="deadbeef0001"))
    code, out, _ = flowc_cli(capsys, "trace", "deadbeef")
    assert code == 0
    assert "run deadbeef0001 of cli_demo" in out and ": running" in out
    assert "[0] answer (llm)" in out and "out answer = step one" in out
    assert "is still running after 1 step(s)" in out  # this process began it and is alive
    assert "path:" not in out  # not reported as a finished run
    code, out, _ = flowc_cli(capsys, "trace", "deadbeef", "--json")
    assert code == 0 and json.loads(out)["status"] == "running"


def test_eval_with_metric_and_resume(
    home: Path, clients: Clients, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "qa.jsonl"
    rows = [
        {"question": "a", "answer": "Answer a in 1 words"},
        {"question": "b", "answer": "wrong"},
        {"question": "c", "words": 2, "answer": "Answer c in 2 words"},
        {"question": "d", "answer": "Answer d in 1 words"},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out_dir = tmp_path / "ev"
    argv = ["eval", str(spec), "--data", str(data), "--metric", "exact_match", "--out", str(out_dir), "--no-cache"]
    code, out, err = flowc_cli(capsys, *argv)
    assert code == 0, err
    assert "cli_demo on" in out and "4 examples, 0 failed" in out
    assert "exact_match" in out and "0.750" in out
    assert "LM calls 4 (0 cached)" in out
    assert "4/4" in err  # the progress bar
    report = json.loads((out_dir / "report.json").read_text())
    assert report["metrics"] == {"exact_match": 0.75} and len(report["examples"]) == 4
    assert clients.calls == 4

    code, out, _ = flowc_cli(capsys, *argv, "--resume")
    assert code == 0 and "4 examples" in out and "0.750" in out
    assert clients.calls == 4  # nothing ran again

    code, out, _ = flowc_cli(capsys, *argv, "--limit", "2", "-m", "f1", "--output", "answer", "--target", "answer")
    assert code == 0 and "2 examples" in out and "f1" in out and clients.calls == 6


def test_eval_default_out_dir_and_missing_data(
    home: Path, clients: Clients, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "a", "answer": "x"}\n')
    code, _, _ = flowc_cli(capsys, "eval", str(spec), "--data", str(data), "-m", "exact_match")
    (folder,) = (home / "evals" / "cli_demo-qa").iterdir()  # each evaluation gets its own folder
    assert code == 0 and (folder / "report.json").is_file()
    code, _, err = flowc_cli(capsys, "eval", str(spec), "--data", str(tmp_path / "none.jsonl"), "-m", "exact_match")
    assert code == 1 and "no dataset file" in err
    code, _, err = flowc_cli(capsys, "eval", str(spec), "--data", str(data))
    assert code == 1 and "no metric to score with" in err
    code, _, err = flowc_cli(capsys, "eval", str(spec), "--data", str(data), "-m", "exact_match", "--target", "gold")
    assert code == 1 and "field 'gold', which no record has" in err and "Traceback" not in err
    assert clients.calls == 1  # refused before running anything
