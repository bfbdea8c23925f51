"""Running a spec's `test` blocks (`flowc test`): each test is one run with its inputs, then its
expectations on the outputs.

- `OUTPUT == VALUE` / `!=`: the output equals the value (JSON equality: "3" is not 3; strings
  compare exactly, after the output parser's own trimming);
- `contains`: a string output contains the value as a substring, a list output has it as an
  element;
- `matches`: a regular expression (Python `re.search`) finds a match in the output's text.

A test passes when its run succeeds and every expectation holds; it fails when an expectation does
not hold, and errors when the run fails (the error's code is kept). The results render as JUnit
XML for CI (one <testsuite> per spec, one <testcase> per test).
"""

from __future__ import annotations

import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from flowc.runtime.executor import Executor
from flowc.spec.models import Expectation, TestCase


@dataclass(frozen=True)
class ExpectationResult:
    expectation: Expectation
    ok: bool
    actual: Any
    reason: str = ""

    def describe(self) -> str:
        e = self.expectation
        return f"expect {e.output} {e.op} {json.dumps(e.value, ensure_ascii=False)}"


@dataclass
class TestResult:
    spec: str
    pipeline: str
    name: str
    status: Literal["passed", "failed", "error"]
    duration_s: float
    run_id: str | None = None
    expectations: list[ExpectationResult] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None

    @property
    def failures(self) -> list[ExpectationResult]:
        return [x for x in self.expectations if not x.ok]

    def to_json(self) -> dict[str, Any]:
        return {
            "spec": self.spec,
            "pipeline": self.pipeline,
            "test": self.name,
            "status": self.status,
            "duration_s": self.duration_s,
            "run_id": self.run_id,
            "error": self.error,
            "error_code": self.error_code,
            "expectations": [
                {"expect": x.describe(), "ok": x.ok, "actual": x.actual, "reason": x.reason} for x in self.expectations
            ],
        }


def check(expectation: Expectation, outputs: dict[str, Any]) -> ExpectationResult:
    """Whether one expectation holds for a run's outputs."""
    e = expectation
    if e.output not in outputs:
        return ExpectationResult(e, False, None, f"the run produced no output '{e.output}'")
    actual = outputs[e.output]
    if e.op == "==":
        ok = actual == e.value
    elif e.op == "!=":
        ok = actual != e.value
    elif e.op == "contains":
        if isinstance(actual, str):
            ok = isinstance(e.value, str) and e.value in actual
        elif isinstance(actual, list):
            ok = e.value in actual
        else:
            return ExpectationResult(
                e, False, actual, f"'contains' needs a text or a list, got {type(actual).__name__}"
            )
    else:  # matches
        text = actual if isinstance(actual, str) else json.dumps(actual, ensure_ascii=False)
        try:
            ok = re.search(str(e.value), text) is not None
        except re.error as err:
            return ExpectationResult(e, False, actual, f"the pattern is not a valid regular expression: {err}")
    return ExpectationResult(e, ok, actual, "" if ok else f"got {json.dumps(actual, ensure_ascii=False)[:200]}")


async def run_test(executor: Executor, spec_path: str, name: str, case: TestCase) -> TestResult:
    t0 = time.perf_counter()
    result = await executor.run(case.inputs)
    out = TestResult(spec_path, executor.compiled.name, name, "passed", time.perf_counter() - t0, run_id=result.run_id)
    if result.status != "ok":
        out.status, out.error, out.error_code = "error", result.error, result.error_code
        return out
    out.expectations = [check(e, result.outputs) for e in case.expect]
    if out.failures:
        out.status = "failed"
    return out


def junit_xml(results: Sequence[TestResult]) -> str:
    """JUnit XML (the format CI systems read): a suite per spec, a case per test."""
    root = ET.Element("testsuites", name="flowc")
    by_spec: dict[str, list[TestResult]] = {}
    for r in results:
        by_spec.setdefault(r.spec, []).append(r)
    totals = {"tests": 0, "failures": 0, "errors": 0}
    for spec, rs in by_spec.items():
        counts = {
            "tests": len(rs),
            "failures": sum(r.status == "failed" for r in rs),
            "errors": sum(r.status == "error" for r in rs),
        }
        for k, v in counts.items():
            totals[k] += v
        attrs = {"name": rs[0].pipeline, "file": spec, "time": f"{sum(r.duration_s for r in rs):.3f}"}
        suite = ET.SubElement(root, "testsuite", attrs | {k: str(v) for k, v in counts.items()})
        for r in rs:
            case = ET.SubElement(
                suite, "testcase", classname=r.pipeline, name=r.name, file=spec, time=f"{r.duration_s:.3f}"
            )
            if r.status == "failed":
                text = "\n".join(f"{x.describe()}: {x.reason}" for x in r.failures)
                ET.SubElement(case, "failure", message=r.failures[0].describe(), type="expectation").text = text
            elif r.status == "error":
                ET.SubElement(case, "error", message=str(r.error)[:500], type=r.error_code or "error").text = r.error
            if r.run_id:
                ET.SubElement(case, "system-out").text = f"flowc trace {r.run_id}"
    for k, v in totals.items():
        root.set(k, str(v))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
