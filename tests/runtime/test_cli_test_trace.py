"""`flowc test` (a spec's test blocks, exit code, JUnit XML), `flowc check --format json|sarif`,
`flowc trace --full` and the live step view of `flowc run --trace`."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from cli_fakes import SPEC, Clients, cli

from flowc.runtime.spectests import check
from flowc.spec.models import Expectation

pytestmark = pytest.mark.timeout(60)

TESTED = SPEC.replace(
    "  metric em:",
    """  test capital {
    question = "paris"
    expect answer == "PARIS"
    expect answer matches "^P[A-Z]+$"
  }
  test wrong {
    question = "rome"
    expect answer contains "Milan"
  }
  test broken {
    question = "please fail"
    expect answer != ""
  }
  metric em:""",
)


def test_flowc_test_runs_the_test_blocks(
    flowc_home: Path, rule_clients: Clients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "qa.flow"
    spec.write_text(TESTED)
    code, out, _ = cli(capsys, "test", str(spec), "--junit", "junit.xml")
    assert code == 1
    assert "PASS  qa::capital" in out
    assert "FAIL  qa::wrong" in out and 'expect answer contains "Milan": got "ROME"' in out
    assert "ERROR qa::broken" in out and "lm-auth" in out
    assert "1 passed, 1 failed, 1 errors" in out
    suites = ET.parse(tmp_path / "junit.xml").getroot()
    assert (suites.get("tests"), suites.get("failures"), suites.get("errors")) == ("3", "1", "1")
    cases = {c.get("name"): c for c in suites.iter("testcase")}
    assert cases["capital"].find("failure") is None and cases["capital"].find("error") is None
    failure = cases["wrong"].find("failure")
    assert failure is not None and "Milan" in (failure.get("message") or "")
    error = cases["broken"].find("error")
    assert error is not None and error.get("type") == "lm-auth"
    # only the passing one: exit 0
    code, out, _ = cli(capsys, "test", str(spec), "-k", "cap*")
    assert code == 0 and "1 passed in" in out and "wrong" not in out
    code, out, _ = cli(capsys, "test", str(spec), "--json", "-k", "wrong")
    (res,) = json.loads(out)
    assert res["status"] == "failed" and res["expectations"][0]["actual"] == "ROME"


def test_a_spec_without_tests_passes_and_says_so(
    flowc_home: Path, rule_clients: Clients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "qa.flow"
    spec.write_text(SPEC)
    code, out, _ = cli(capsys, "test", str(spec))
    assert code == 0 and "no tests" in out and not rule_clients.calls


@pytest.mark.parametrize(
    ("op", "value", "actual", "ok"),
    [
        ("==", "a", "a", True),
        ("==", 3, "3", False),  # JSON equality: text is not a number
        ("!=", "", "x", True),
        ("contains", "b", "abc", True),
        ("contains", "z", ["z", "y"], True),
        ("contains", "q", ["z"], False),
        ("matches", r"^\d+$", "123", True),
        ("matches", r"^\d+$", "12a", False),
    ],
)
def test_expectation_operators(op: str, value: object, actual: object, ok: bool) -> None:
    assert check(Expectation(output="x", op=op, value=value), {"x": actual}).ok is ok  # type: ignore[arg-type]


def test_check_as_json_and_sarif(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.flow"
    good.write_text(SPEC)
    bad = tmp_path / "bad.flow"
    bad.write_text(SPEC.replace("answer.answer", "answr.answer"))
    code, out, _ = cli(capsys, "check", str(good), str(bad), "--json")
    assert code == 1
    report = json.loads(out)
    assert report["errors"] == 1 and [f["ok"] for f in report["files"]] == [True, False]
    (d,) = report["files"][1]["diagnostics"]
    assert (d["code"], d["line"], d["severity"]) == ("unknown-node", 4, "error")
    assert d["column"] > 1 and d["hint"] == "did you mean 'answer'?" and d["docs"].endswith("#unknown-node")
    code, out, _ = cli(capsys, "check", str(good), str(bad), "--format", "sarif")
    sarif = json.loads(out)
    assert code == 1 and sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    assert run["tool"]["driver"]["name"] == "flowc"
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["unknown-node"]
    (result,) = run["results"]
    loc = result["locations"][0]["physicalLocation"]
    assert result["level"] == "error" and result["ruleId"] == "unknown-node"
    assert loc["artifactLocation"]["uri"].endswith("bad.flow") and loc["region"]["startLine"] == 4
    code, out, _ = cli(capsys, "check", str(tmp_path / "missing.flow"), "--json")
    assert code == 1 and json.loads(out)["files"][0]["diagnostics"][0]["code"] == "file-not-found"


def test_trace_full_shows_prompts_and_replies(
    flowc_home: Path, rule_clients: Clients, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "qa.flow"
    spec.write_text(SPEC)
    code, out, _ = cli(capsys, "run", str(spec), "-i", "question=lima\nperu", "--trace", "--full")
    assert code == 0
    assert "── user ──" in out and "        Q: lima\n        peru" in out  # the rendered prompt, line by line
    assert "── reply ──" in out and "LIMA\n        PERU" in out
    assert out.index("[0] answer (llm)") < out.index("answer: LIMA")  # the step came before the result
    rid = json.loads(cli(capsys, "runs", "--json")[1])[0]["id"]
    code, out, _ = cli(capsys, "trace", rid)
    assert "── user ──" not in out  # without --full, one line per call
    code, out, _ = cli(capsys, "trace", rid, "--full")
    assert "── user ──" in out and "Q: lima" in out
