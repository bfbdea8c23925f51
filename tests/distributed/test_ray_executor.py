"""The Ray executor on a local Ray instance (2 CPUs) started by this module (one instance for all its
tests: Ray takes seconds to start). `flowc eval --executor ray`: the same rows as the local
executor, a worker killed mid-eval, a driver killed with -9 and resumed, RPM limits that hold across
the workers together; optimizer batches on the workers: the same patch and budget as in process."""

from __future__ import annotations

import asyncio
import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from _ray_cases import echo, records, spec_text

import flowc
from flowc.cli.main import main
from flowc.runtime import evaldir
from flowc.runtime.evaluate import bind_metrics, evaluate
from flowc.runtime.session import open_executor
from flowc.runtime.store import RunStore
from flowc.testing.fake_server import FakeOpenAIServer

pytest.importorskip("ray")

from flowc.distributed.cluster import ray_job
from flowc.distributed.eval import RayDispatch, metric_args
from flowc.distributed.scoring import ray_scoring
from flowc.optimizers.budget import Budget
from flowc.optimizers.factory import make_clients, make_optimizer
from flowc.optimizers.scoring import batch_runner, metric_from_spec

pytestmark = pytest.mark.timeout(600)

COMPARED = ("status", "error_code", "inputs", "expected", "outputs", "scores", "lm_calls", "tokens", "artifact_hash")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    for k in [k for k in os.environ if k.startswith("FLOWC_MODEL")]:
        monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "home"


def _compile(tmp_path: Path, base_url: str, **kw: Any) -> flowc.CompiledPipeline:
    path = tmp_path / "qa.flow"
    path.write_text(spec_text(base_url, **kw), encoding="utf-8")
    return flowc.compile(str(path))


def _evaluate(compiled: flowc.CompiledPipeline, recs: list[dict[str, Any]], root: Path, job: Any = None, **kw: Any):
    ex = open_executor(compiled, cache=False, root=root)
    metrics = bind_metrics(compiled.spec.metrics, [], None, None, "answer")
    dispatch = RayDispatch(job, metric_args([], None, None), store=ex.store) if job is not None else None
    report = asyncio.run(evaluate(ex, recs, metrics, root / "eval", dispatch=dispatch, **kw))
    rows = json.loads((root / "eval" / evaldir.REPORT).read_text(encoding="utf-8"))["examples"]
    return report, {r["id"]: r for r in rows}, ex


def test_same_rows_as_the_local_executor(ray_instance: dict[str, Any], echo_server: Any, home: Path) -> None:
    compiled = _compile(home.parent, echo_server.base_url)
    recs = records(12, failing=(4, 9))
    local_report, local, _ = _evaluate(compiled, recs, home / "local", concurrency=3)
    with ray_job(workers=2, per_worker=3, cache=False) as job:
        report, distributed, _ex = _evaluate(compiled, recs, home / "ray", job)
    assert sorted(distributed) == sorted(local) == [r["id"] for r in recs]
    for rid, row in local.items():
        assert {k: distributed[rid][k] for k in COMPARED} == {k: row[k] for k in COMPARED}, rid
    assert (report["errors"], report["metrics"], report["lm_calls"]) == (
        local_report["errors"],
        local_report["metrics"],
        local_report["lm_calls"],
    )
    assert report["errors_by_code"] == {"lm-bad-request": 2}
    assert report["executor"] == "ray" and report["retried"] == [] and len(report["worker_names"]) == 2
    # every run is in the driver's run store, with its steps and calls, and says which worker ran it
    store = RunStore(home / "ray" / "runs.sqlite")
    workers = set()
    for row in distributed.values():
        run = store.load(row["run_id"])
        assert run.status == row["status"] and run.outputs == row["outputs"]
        assert len(run.lm_calls) == 1 and run.meta["executor"] == "ray"
        workers.add(run.meta["worker"])
    assert workers <= set(report["worker_names"])
    assert {r["status"] for r in store.list_runs(limit=100)} == {"ok", "error"}


def test_a_worker_killed_mid_eval_loses_and_doubles_nothing(ray_instance: dict[str, Any], home: Path) -> None:
    recs = records(16)
    with FakeOpenAIServer(default=echo(0.3)) as srv, ray_job(workers=2, per_worker=2, cache=False) as job:
        compiled = _compile(home.parent, srv.base_url)
        killed: list[int] = []

        def kill_one(done: int, total: int, row: Any) -> None:
            if done >= 2 and not killed:
                killed.append(job.pool.pids()[0])
                os.kill(killed[0], signal.SIGKILL)

        report, _rows, _ = _evaluate(compiled, recs, home / "ray", job, on_progress=kill_one)
        hits = collections.Counter(h.body["messages"][-1]["content"] for h in srv.hits_log)
    assert killed and report["examples"] == 16 and report["errors"] == 0
    lines = (home / "ray" / "eval" / evaldir.RESULTS).read_text(encoding="utf-8").splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    assert sorted(ids) == [r["id"] for r in recs]  # each example recorded exactly once
    retried = report["retried"]
    assert retried and all(r["worker"].endswith(f":{killed[0]}") for r in retried)
    assert {r["id"] for r in retried} <= set(ids) and report["replaced_workers"] == 1
    for rec in recs:  # only an example that was on the dead worker was asked twice
        asked = hits[f"Q: {rec['question']}"]
        assert 1 <= asked <= (2 if rec["id"] in {r["id"] for r in retried} else 1), rec["id"]


def test_rpm_holds_across_all_workers(ray_instance: dict[str, Any], echo_server: Any, home: Path) -> None:
    rpm, n = 120, 130  # a burst of 120, then one call every 0.5 s: >= 5 s for the last 10
    compiled = _compile(home.parent, echo_server.base_url, rpm=rpm)
    with ray_job(workers=2, per_worker=8, cache=False) as job:
        report, _, _ = _evaluate(compiled, records(n), home / "ray", job)
        grants = job.grants()
    assert report["examples"] == n and report["errors"] == 0
    assert len(grants) == n and len({w for _, _, w in grants}) == 2  # one limiter served both workers
    times = sorted(t for t, _, _ in grants)
    for i, t in enumerate(times):  # never more than the bucket plus its refill in any window
        in_window = sum(1 for u in times[i:] if u - t <= 1.0)
        assert in_window <= rpm + 2 + 1
    assert times[-1] - times[0] >= (n - rpm) * 60 / rpm - 0.5


def test_cli_driver_killed_then_resumed_repeats_no_finished_call(ray_instance: dict[str, Any], home: Path) -> None:
    recs = records(40)
    data = home.parent / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in recs), encoding="utf-8")
    out = home.parent / "ev"
    with FakeOpenAIServer(default=echo(0.2)) as srv:
        (home.parent / "qa.flow").write_text(spec_text(srv.base_url), encoding="utf-8")
        argv = ["eval", "qa.flow", "--data", str(data), "--out", str(out), "--no-cache", "-c", "2"]
        argv += ["--executor", "ray", "--workers", "2"]
        driver = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys; from flowc.cli.main import main; sys.exit(main(sys.argv[1:]))",
                *argv,
                "--address",
                ray_instance["address"],
            ],
            env={**os.environ, "FLOWC_HOME": str(home)},
            cwd=home.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            results = out / evaldir.RESULTS
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline and driver.poll() is None:
                if results.exists() and len(results.read_text(encoding="utf-8").splitlines()) >= 6:
                    break
                time.sleep(0.1)
            assert driver.poll() is None, driver.stderr.read().decode() if driver.stderr else ""
            driver.send_signal(signal.SIGKILL)
            driver.wait(30)
        finally:
            if driver.poll() is None:
                driver.kill()
        finished = {r["id"] for r in evaldir.read_rows(out) if r["status"] == "ok"}
        assert 6 <= len(finished) < len(recs)
        asked_before = collections.Counter(h.body["messages"][-1]["content"] for h in srv.hits_log)
        assert main([*argv, "--resume"]) == 0
        asked = collections.Counter(h.body["messages"][-1]["content"] for h in srv.hits_log)
    rows = {r["id"]: r for r in evaldir.read_rows(out)}
    assert sorted(rows) == [r["id"] for r in recs] and all(r["status"] == "ok" for r in rows.values())
    for rec in recs:
        prompt = f"Q: {rec['question']}"
        if rec["id"] in finished:  # finished before the kill: not asked again by the resume
            assert asked[prompt] == asked_before[prompt] == 1, rec["id"]
        else:
            assert asked[prompt] - asked_before[prompt] == 1, rec["id"]
    report = json.loads((out / evaldir.REPORT).read_text(encoding="utf-8"))
    assert len(report["examples"]) == 40 and report["executor"] == "ray"


def _bootstrap(compiled: flowc.CompiledPipeline, run_dir: Path, budget: Budget, runner: Any = None) -> Any:
    train = records(6)
    val = [{**r, "id": "v" + r["id"], "question": "v" + r["question"]} for r in records(6)]
    for r in val:
        r["answer"] = f"Q: {r['question']}".upper() if r["id"][-1] in "12457" else "no"
    optimizer = make_optimizer("bootstrap", make_clients(compiled), settings={"num_candidates": 2})
    with batch_runner(runner):
        return optimizer.optimize(
            compiled,
            trainset=train,
            valset=val,
            metric=metric_from_spec(compiled),
            budget=budget,
            seed=0,
            run_dir=run_dir,
        )


@pytest.mark.parametrize("calls", [200, 5])  # 5: the budget stops the job during the baseline
def test_optimizer_batches_on_workers_give_the_local_patch(
    ray_instance: dict[str, Any], echo_server: Any, home: Path, calls: int
) -> None:
    compiled = _compile(home.parent, echo_server.base_url)
    local = _bootstrap(compiled, home / "local", Budget(calls=calls))
    with ray_scoring(workers=2, cache=False, budgeted=True) as runner:
        remote = _bootstrap(compiled, home / "ray", Budget(calls=calls), runner)
        summary = runner.summary()
    assert summary["batches"] > 0 and summary["local_batches"] == 0
    assert (remote.params, remote.scores, remote.stopped_by) == (local.params, local.scores, local.stopped_by)
    assert remote.budget_used["calls"] == local.budget_used["calls"] <= calls
    assert remote.budget_used["tokens"] == local.budget_used["tokens"]
    if calls == 5:
        assert remote.stopped_by == "budget: calls"
    else:
        assert 0 < local.scores["val_before"] < 1 and remote.stopped_by is None
    journal = [len((home / d / "journal-pipeline.jsonl").read_text().splitlines()) for d in ("local", "ray")]
    assert journal[0] == journal[1] == local.budget_used["calls"]  # the workers' calls are journaled


def test_cli_optimize_on_ray(
    ray_instance: dict[str, Any], echo_server: Any, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (home.parent / "qa.flow").write_text(spec_text(echo_server.base_url), encoding="utf-8")
    data = home.parent / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records(8)), encoding="utf-8")
    argv = ["optimize", "qa.flow", "-O", "bootstrap", "--data", str(data), "--set", "num_candidates=2"]
    assert main([*argv, "--budget-calls", "100", "--executor", "ray", "--workers", "2"]) == 0
    err = capsys.readouterr().err
    assert "ray: 2 worker(s) run the job's evaluations" in err
    assert ", 0 in process" in err and "ray: 0 batch(es)" not in err
