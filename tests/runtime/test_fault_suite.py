"""The fault suite, small: a seeded 20 % of faulty replies, the evaluation killed with SIGKILL at a
seeded point, resumed — no example lost, none run twice, no run left 'running'.
(benchmarks/bench_faults.py runs it with 1,000 examples.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from flowc.testing.fault_suite import FaultSuite, run_fault_suite

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def test_kill_and_resume_under_faults_loses_and_repeats_nothing(tmp_path: Path) -> None:
    suite = FaultSuite(
        examples=150,
        rate=0.2,
        seed=3,
        concurrency=8,
        timeout_s=0.5,
    )
    report = run_fault_suite(suite, tmp_path)
    assert report["killed"], "the evaluation finished before the kill; raise examples or lower kill_between"
    assert 0 < report["done_at_kill"] < 150
    assert report["lost"] == 0 and report["duplicated"] == 0, report
    assert report["runs_left_running"] == 0 and report["runs_interrupted"] >= 1
    assert report["finished"] + report["failed"] == 150
    served = report["server"]
    faults = sum(v for k, v in served.items() if k not in ("hits", "ok"))
    # the store's writes are batched: a SIGKILL may take its last 0.1 s of records, so it is not compared exactly
    assert faults > 0 and report["retried"] > 0 and report["retried_in_store"] > 0
    assert set(report["failed_by_code"]) <= {
        "lm-bad-response",
        "lm-timeout",
        "lm-server-error",
        "lm-rate-limited",
        "lm-connection",
    }
