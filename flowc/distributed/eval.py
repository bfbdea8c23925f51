"""`flowc eval --executor ray`: the examples run on Ray workers, the results land where a local
evaluation puts them.

`RayDispatch` is an `evaluate.Dispatch`: `evaluate()` still owns the folder lock, the checkpoint and
the report; only the running of examples moves to the workers. Each finished example comes back to
the driver as its row and its full run; the driver stores the run in its run store
(`RunStore.add_finished`) and then records the row in the checkpoint (flushed and fsynced) — one
writer for both, in the driver's event loop, so an example counts exactly once. A row is recorded
only after its run was queued for the store, so a resumed evaluation never finds a done row whose
run is missing from the store (short of the store's own `FLUSH_S` window on a kill -9).

A worker that dies takes its in-flight examples with it; the pool runs them again on another
worker and the report lists them under `retried`. A driver killed outright leaves a checkpoint
that `--resume` continues like any other: finished examples are not run again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

from flowc.distributed.cluster import RayJob, ray_job
from flowc.distributed.worker import MetricArgs, raise_payload, run_from_json
from flowc.runtime.evaluate import Checkpoint, ExampleRunner, Progress, StopPolicy


class RayDispatch:
    """Runs an evaluation's examples on a Ray job's workers (see the module docstring)."""

    def __init__(self, job: RayJob, metric_args: MetricArgs, *, store: Any | None = None) -> None:
        self.job = job
        self.metric_args = metric_args
        self.store = store

    async def drive(
        self,
        runner: ExampleRunner,
        checkpoint: Checkpoint,
        records: list[dict[str, Any]],
        on_progress: Progress | None,
        stop: StopPolicy | None,
    ) -> str | None:
        pool = self.job.pool
        todo = [r for r in records if str(r["id"]) not in checkpoint.done]
        total = len(records)
        art = pool.artifact(runner.executor.compiled)
        errors = 0
        stopped: str | None = None
        if on_progress:
            on_progress(len(checkpoint.done), total, None)

        def call(worker: Any, record: dict[str, Any]) -> Any:
            return worker.run_example.remote(art, record, self.metric_args)

        def done(record: dict[str, Any], result: dict[str, Any]) -> None:
            nonlocal errors, stopped
            if "error" in result:
                raise_payload(result["error"])
            row = result["row"]
            run = run_from_json(result.get("run"))
            if self.store is not None and run is not None:
                self.store.add_finished(run)
            checkpoint.record(row)
            if row["status"] != "ok":
                errors += 1
                if stop is not None and stop.should_stop(errors) and not stopped:
                    stopped = f"{errors} example(s) failed (--fail-fast, --max-errors {stop.max_errors})"
            if on_progress:
                on_progress(len(checkpoint.done), total, row)

        await pool.run(todo, call, done, stop=lambda: stopped is not None, describe=lambda r: str(r["id"]))
        return stopped

    def summary(self) -> dict[str, Any]:
        return self.job.pool.describe()


def metric_args(names: Sequence[str], output: str | None, target: str | None) -> MetricArgs:
    return MetricArgs(tuple(names), output, target)


@contextlib.contextmanager
def ray_dispatch(
    *,
    address: str | None,
    workers: int | None,
    per_worker: int,
    cache: bool,
    metrics: MetricArgs,
    store: Any | None,
) -> Iterator[RayDispatch]:
    """A `RayDispatch` on a Ray job started for it (and torn down after)."""
    with ray_job(address, workers=workers, per_worker=per_worker, cache=cache) as job:
        yield RayDispatch(job, metrics, store=store)
