"""`flowc eval` as a user meets it: failures shown with their codes and in the exit code, both
scores, resume retrying failures, a folder per evaluation, the per-example table and its export,
--compare, --map, Python metrics, llm_judge, --model overrides, the folder lock, and SIGINT."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_fakes import SPEC, Clients, RuleLM, cli, write_data

import flowc.runtime.session as session
from flowc.runtime.evaldir import locked
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.store import RunStore

pytestmark = pytest.mark.timeout(120)

ROWS = [
    {"id": "a", "question": "paris", "answer": "PARIS"},
    {"id": "b", "question": "rome", "answer": "wrong"},
    {"id": "c", "question": "please fail", "answer": "x"},
    {"id": "d", "question": "lima", "answer": "LIMA"},
    {"id": "e", "question": "fail again", "answer": "y"},
]


@pytest.fixture
def spec(tmp_path: Path) -> Path:
    p = tmp_path / "qa.flow"
    p.write_text(SPEC)
    return p


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return write_data(tmp_path / "qs.jsonl", ROWS)


def folders(flowc_home: Path) -> list[Path]:
    return sorted((flowc_home / "evals" / "qa-qs").iterdir())


def test_failures_are_shown_with_codes_and_fail_the_exit_code(
    flowc_home: Path, rule_clients: Clients, spec: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "eval", str(spec), "--data", str(data))
    assert code == 1  # two examples failed, none tolerated
    assert "5 examples, 2 failed (lm-auth × 2)" in out
    assert "first errors:" in out and "c: node 'answer', model 'openai/fake': no API key" in out.replace(
        "error[lm-auth]: ", ""
    )
    # both scores: failures as 0 (2/5) and over the examples that ran (2/3)
    assert "all (failed = 0)" in out and "ran ok (3)" in out
    assert "0.400" in out and "0.667" in out
    report = json.loads((folders(flowc_home)[0] / "report.json").read_text())
    assert report["metrics"] == {"em": pytest.approx(0.4)} and report["metrics_ok"] == {"em": pytest.approx(2 / 3)}
    assert report["errors_by_code"] == {"lm-auth": 2}
    assert [e["id"] for e in report["first_errors"]] == ["c", "e"]
    # tolerated: --max-errors 2 exits 0, and this run got a folder of its own
    code, _, _ = cli(capsys, "eval", str(spec), "--data", str(data), "--max-errors", "2")
    assert code == 0 and len(folders(flowc_home)) == 2


def test_fail_fast_stops_starting_examples(
    flowc_home: Path, rule_clients: Clients, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"id": str(i), "question": "fail" if i == 1 else f"q{i}", "answer": "x"} for i in range(30)]
    data = write_data(tmp_path / "qs.jsonl", rows)
    code, out, _ = cli(capsys, "eval", str(spec), "--data", str(data), "--fail-fast", "-c", "1")
    assert code == 1 and "stopped early: 1 example(s) failed" in out
    assert "2 examples of 30" in out  # examples 0 and 1 ran; no other one started
    assert len(rule_clients.calls) == 2


def test_resume_retries_failed_examples_only(
    flowc_home: Path, rule_clients: Clients, spec: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cli(capsys, "eval", str(spec), "--data", str(data))
    assert len(rule_clients.calls) == 5
    # the "server" is fixed: the failed examples now answer
    fixed = write_data(tmp_path / "qs.jsonl", [dict(r, question=r["question"].replace("fail", "ok")) for r in ROWS])
    assert fixed == data
    code, out, _ = cli(capsys, "eval", str(spec), "--data", str(data), "--resume")
    # the rows are keyed by id: only c and e ran again, in the same (latest) folder
    assert code == 0 and len(folders(flowc_home)) == 1
    assert [c.messages[-1].content for c in rule_clients.made[-1].calls] == ["Q: please ok", "Q: ok again"]
    assert "5 examples, 0 failed" in out
    rows = {r["id"]: r for r in map(json.loads, (folders(flowc_home)[0] / "results.jsonl").read_text().splitlines())}
    assert len(rows) == 5 and rows["c"]["status"] == "ok"
    assert "lm-auth" in rows["c"]["previous_errors"][0]  # the earlier failure is kept


def test_resume_without_an_earlier_evaluation_says_so(
    flowc_home: Path, rule_clients: Clients, spec: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "eval", str(spec), "--data", str(data), "--resume")
    assert code == 1 and "nothing to resume" in err and not rule_clients.calls


def test_table_export_and_json(
    flowc_home: Path, rule_clients: Clients, spec: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(
        capsys, "eval", str(spec), "--data", str(data), "--max-errors", "5", "--show", "3", "--export", "t.csv"
    )
    assert code == 0
    assert "3 of 5 examples, failed and lowest first" in out
    table = out[out.index("failed and lowest first") :]
    assert table.index("please fail") < table.index("fail again") < table.index("rome")  # errors, then worst
    assert "paris" not in table  # only the 3 worst rows
    with (tmp_path / "t.csv").open() as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert rows["a"]["input.question"] == "paris" and rows["a"]["expected.answer"] == "PARIS"
    assert rows["a"]["output.answer"] == "PARIS" and float(rows["a"]["score.em"]) == 1.0
    assert rows["c"]["status"] == "error" and rows["c"]["error_code"] == "lm-auth"
    code, out, _ = cli(
        capsys, "eval", str(spec), "--data", str(data), "--max-errors", "5", "--json", "--export", "t.jsonl"
    )
    report = json.loads(out)
    assert report["errors"] == 2 and report["metrics_ok"]["em"] == pytest.approx(2 / 3)
    lines = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [r["id"] for r in lines] == ["a", "b", "c", "d", "e"]


def test_compare_two_evaluations(
    flowc_home: Path, rule_clients: Clients, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"id": str(i), "question": f"w{i}", "answer": f"W{i}" if i % 2 else "nope"} for i in range(40)]
    data = write_data(tmp_path / "qs.jsonl", rows)
    cli(capsys, "eval", str(spec), "--data", str(data), "--out", "ev_a")
    # B: a different prompt that fixes every even example (the answer ignores the question there)
    better = spec.read_text().replace('"Q: {{question}}"', '"Q: {{question}}!"')
    spec.write_text(better)
    session_lm = rule_clients

    async def answer(req: LMRequest) -> LMResponse:
        q = req.messages[-1].content.removeprefix("Q: ").rstrip("!")
        return LMResponse(text="nope" if int(q[1:]) % 2 == 0 else q.upper(), model=req.model)

    lm = RuleLM()
    lm.complete = answer  # type: ignore[method-assign]
    session_lm.made.clear()
    import flowc.runtime.session as s

    original = s.default_client
    s.default_client = lambda c, **_: lm  # type: ignore[assignment]
    try:
        cli(capsys, "eval", str(spec), "--data", str(data), "--out", "ev_b")
    finally:
        s.default_client = original
    code, out, _ = cli(capsys, "eval", "--compare", "ev_a", "ev_b")
    assert code == 0
    assert "40 paired examples" in out
    assert "0.500" in out and "1.000" in out and "+0.500" in out
    line = next(x for x in out.splitlines() if x.startswith("em"))
    assert line.split()[-3:] == ["20", "0", "20"]  # B wins 20, loses 0, 20 ties
    code, out, _ = cli(capsys, "eval", "--compare", "ev_a", "ev_b", "--json")
    (m,) = json.loads(out)["metrics"]
    assert (m["wins"], m["losses"], m["ties"], m["n"]) == (20, 0, 20, 40)
    assert m["diff"] == pytest.approx(0.5) and 0.3 < m["ci"][0] <= 0.5 <= m["ci"][1] < 0.7
    code, _, err = cli(capsys, "eval", "--compare", "ev_a", "nowhere")
    assert code == 1 and "no evaluation folder 'nowhere'" in err


def test_map_columns_to_inputs(
    flowc_home: Path, rule_clients: Clients, spec: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_data(tmp_path / "qs.jsonl", [{"q": "oslo", "answer": "OSLO"}])
    code, out, _ = cli(capsys, "eval", str(spec), "--data", str(data), "--map", "question=q")
    assert code == 0 and "1 examples, 0 failed" in out and "1.000" in out
    code, _, err = cli(capsys, "eval", str(spec), "--data", str(data), "--map", "question=query")
    assert code == 1 and "no record has a field 'query'" in err
    code, _, err = cli(capsys, "eval", str(spec), "--data", str(data), "--map", "questoin=q")
    assert code == 1 and "'questoin' is not an input" in err


def test_python_metric_from_the_command_line(
    flowc_home: Path, rule_clients: Clients, spec: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mymetrics.py").write_text(
        "def length_ok(prediction, target):\n    return len(prediction or '') == len(target)\n\n"
        "def uses_example(prediction, target, example):\n    return 1.0 if example['id'] in 'ad' else 0.5\n"
    )
    argv = ["eval", str(spec), "--data", str(data), "--max-errors", "5", "--json"]
    code, out, _ = cli(capsys, *argv, "-m", "mymetrics:length_ok", "-m", "mymetrics.py:uses_example")
    assert code == 0
    report = json.loads(out)
    assert report["metrics_ok"] == {
        "mymetrics:length_ok": pytest.approx(2 / 3),
        "mymetrics.py:uses_example": pytest.approx(2.5 / 3),
    }
    for bad, said in [
        ("nomodule:f", "no Python module 'nomodule'"),
        ("mymetrics:missing", "has no function 'missing'"),
        ("mymetrics:", "is not MODULE:FUNCTION"),
    ]:
        code, _, err = cli(capsys, *argv, "-m", bad)
        assert code == 1 and said in err and "Traceback" not in err


def test_a_spec_cannot_name_python_code_as_a_metric(tmp_path: Path) -> None:
    import flowc
    from flowc.errors import SpecErrors

    yaml_spec = tmp_path / "qa.yaml"
    yaml_spec.write_text(
        "pipeline: qa\ninputs: {question: {type: str}}\noutputs: {answer: {source: answer.answer}}\n"
        "models: {m: {id: openai/fake}}\n"
        "nodes: {answer: {kind: llm, prompt: '{{question}}', inputs: {question: question}, outputs: {answer: str}}}\n"
        "metrics: {em: {fn: 'mymetrics:length_ok', output: answer, target: answer}}\n"
    )
    with pytest.raises(SpecErrors) as e:
        flowc.compile(yaml_spec)
    assert e.value.codes  # refused (not a metric name); only the command line may import code
    flow_spec = SPEC.replace("exact_match(", "length_ok(")
    with pytest.raises(SpecErrors) as e:
        flowc.compile(flow_spec)
    assert e.value.codes == ["unknown-metric"]


JUDGE_SPEC = (
    SPEC.replace(
        'model m = "openai/fake"', 'model m = "openai/fake"\n  model judge = "openai/judge-model" { max_tokens: 20 }'
    )
    .replace("node answer: llm {", "node answer: llm {\n    model: m")
    .replace(
        "metric em: exact_match(output = answer, target = answer)",
        "metric graded: llm_judge(output = answer, target = answer, model = judge)",
    )
)


def test_llm_judge_scores_with_the_declared_model(
    flowc_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def judge(req: LMRequest) -> str:
        text = req.messages[-1].content
        assert "Reference answer:\nPARIS" in text or "Reference answer:\nwrong" in text or "Reference" in text
        if "ROME" in text:
            return "I cannot tell."
        return "<score>8</score> close enough"

    made = Clients(judge)
    monkeypatch.setattr(session, "default_client", made)
    spec = tmp_path / "judged.flow"
    spec.write_text(JUDGE_SPEC)
    data = write_data(tmp_path / "qs.jsonl", [ROWS[0], ROWS[1], ROWS[3]])
    code, out, _ = cli(capsys, "eval", str(spec), "--data", str(data), "--json")
    assert code == 1  # rome's judge reply has no grade: that example fails, it is not scored 0 silently
    report = json.loads(out)
    assert report["errors_by_code"] == {"output-parse-error": 1}
    assert report["metrics_ok"] == {"graded": pytest.approx(0.8)}
    judged = [c for c in made.calls if c.node == "llm_judge:graded"]
    assert {c.model for c in judged} == {"openai/judge-model"} and all(c.max_tokens == 20 for c in judged)
    assert len(judged) == 3
    code, _, err = cli(capsys, "eval", str(spec), "--data", str(data), "-m", "llm_judge")
    assert code == 1 and "only a spec can declare" in err


def test_model_override_is_used_and_recorded(
    flowc_home: Path,
    rule_clients: Clients,
    spec: Path,
    data: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = cli(capsys, "run", str(spec), "-i", "question=paris", "--model", "m=openai/gpt-4o-mini")
    assert code == 0
    assert rule_clients.calls[-1].model == "openai/gpt-4o-mini"
    (row,) = RunStore(flowc_home / "runs.sqlite").list_runs()
    assert row["meta"] == {"models": {"m": "openai/gpt-4o-mini"}, "overrides": {"m": {"id": "openai/gpt-4o-mini"}}}
    code, out, _ = cli(capsys, "trace", row["id"])
    assert "models: m=openai/gpt-4o-mini (--model)" in out
    monkeypatch.setenv("FLOWC_MODEL_M", "openai/from-env")
    cli(capsys, "eval", str(spec), "--data", str(data), "--max-errors", "5")
    assert {c.model for c in rule_clients.made[-1].calls} == {"openai/from-env"}
    monkeypatch.delenv("FLOWC_MODEL_M")
    monkeypatch.setenv("FLOWC_MODELS", "m=openai/from-list")
    cli(capsys, "test", str(spec))  # no tests, but --model/env apply to test too
    cli(capsys, "run", str(spec), "-i", "question=x", "--model", "m=openai/cli-wins")
    assert rule_clients.calls[-1].model == "openai/cli-wins"
    code, _, err = cli(capsys, "run", str(spec), "-i", "question=x", "--model", "small=openai/x")
    assert code == 1 and "overrides model 'small', which the pipeline does not declare" in err
    assert "declared models: m" in err


def test_a_second_writer_of_an_eval_folder_is_refused(
    flowc_home: Path, rule_clients: Clients, spec: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ev"
    with locked(folder):  # another evaluation is writing it
        code, _, err = cli(capsys, "eval", str(spec), "--data", str(data), "--out", str(folder))
    assert code == 1 and "run-locked" in err and f"process {os.getpid()}" in err
    assert not rule_clients.calls and not (folder / "results.jsonl").exists()
    # a killed holder leaves no stale lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from flowc.runtime.evaldir import locked\n"
            f"with locked(Path({str(folder)!r})):\n    print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    code, _, err = cli(capsys, "eval", str(spec), "--data", str(data), "--out", str(folder))
    assert code == 1 and f"process {holder.pid}" in err
    holder.kill()
    holder.wait()
    code, _, _ = cli(capsys, "eval", str(spec), "--data", str(data), "--out", str(folder), "--max-errors", "5")
    assert code == 0


def test_sigint_says_what_was_kept_and_how_to_resume(
    flowc_home: Path, spec: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [{"id": str(i), "question": f"q{i}", "answer": "x"} for i in range(6)]
    data = write_data(tmp_path / "qs.jsonl", rows)

    class Interrupts(RuleLM):
        async def complete(self, req: LMRequest) -> LMResponse:
            if len(self.calls) == 3:
                raise KeyboardInterrupt
            return await super().complete(req)

    monkeypatch.setattr(session, "default_client", lambda c, **_: Interrupts())
    code, _, err = cli(capsys, "eval", str(spec), "--data", str(data), "-c", "1", "--no-cache")
    assert code == 130
    (folder,) = folders(flowc_home) if (flowc_home / "evals" / "qa-qs").exists() else [None]
    assert "interrupted: 3 of 6 examples are done and kept in" in err
    assert f"resume with: flowc eval {spec} --data {data} -c 1 --no-cache --out {folder} --resume" in err
    statuses = [r["status"] for r in RunStore(flowc_home / "runs.sqlite").list_runs()]
    assert sorted(statuses) == ["interrupted", "ok", "ok", "ok"]  # none left 'running'


def test_eval_without_spec_or_data_is_a_usage_error(flowc_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "eval")
    assert code == 2 and "needs a SPEC and --data" in err
