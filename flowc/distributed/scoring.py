"""Optimizer forward passes on Ray workers: a `BatchRunner` for `flowc.optimizers.scoring.Scorer`.

`flowc optimize --executor ray` sets `RayScoring` as the job's batch runner, so every minibatch and
validation evaluation (`Run.evaluate`, `Run.validate`, `Scorer.evaluate`) runs its examples on the
workers, one example per task. Each candidate pipeline is put into the object store once and rebuilt
once per worker; the workers' clients, embedded models and caches stay up between batches.

The job's accounting stays on the driver. The Scorer hands the runner its client — the job's
journaled, metered pipeline client — and the runner:

- before a batch, gives the shared limits actor what the budget has left in LM calls and tokens; a
  worker call past it fails with `budget-exceeded`, which the Scorer turns into the job's budget
  stop, as in process (a budget already spent in dollars or seconds stops the batch before it runs);
- after a batch, charges every call the workers made to the job's meter and writes it to the job's
  journal, so the budget, `budget_used` and a resumed job's totals count them.

A client the workers cannot stand in for (a scripted fake, a wrapper that changes requests, e.g. a
temperature override) is not sent out: that batch runs in process with it, as without Ray. A
resumed job answers the pipeline calls of its interrupted step again from the workers' models
(not from the journal: the journal's replay is by order within one client); the calls of its
completed steps are never repeated, since those steps are checkpointed.

JADE and POQD rollouts: call `Run.evaluate` (scores) or `RayScoring.run_batch` (the runs with their
traces) with a candidate from `compiled.with_params({...})`; weights reach the workers as the
adapter path in the artifact, so the path must be readable on every node (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.distributed.cluster import RayJob, ray_job
from flowc.distributed.worker import raise_payload, run_from_json
from flowc.runtime.cache import CachedLM
from flowc.runtime.client import ModelClient
from flowc.runtime.executor import Executor
from flowc.runtime.limits import ContextGuard
from flowc.runtime.lm import LMClient, LMRequest, LMResponse
from flowc.runtime.trace import RunResult

log = logging.getLogger(__name__)


class _Ledger:
    """The job's meter and journal found in a client chain (duck-typed: they live in the optimizers
    layer above this one)."""

    def __init__(self, meter: Any | None, journal: Any | None) -> None:
        self.meter = meter
        self.journal = journal

    def allowance(self) -> tuple[int | None, int | None]:
        if self.meter is None:
            return None, None
        b, m = self.meter.budget, self.meter
        calls = None if b.calls is None else max(0, b.calls - m.calls - m.pending_calls)
        tokens = None if b.tokens is None else max(0, b.tokens - m.tokens - m.pending_tokens)
        return calls, tokens

    def spent(self) -> str | None:
        """Why the budget is spent already on an axis the allowance does not cover, if it is."""
        if self.meter is None:
            return None
        b, m = self.meter.budget, self.meter
        if b.usd is not None and m.usd >= b.usd:
            return f"the budget of ${b.usd} is spent (${m.usd:.4f})"
        if b.seconds is not None and m.seconds >= b.seconds:
            return f"the time budget of {b.seconds}s is spent"
        return None

    def charge(self, runs: Sequence[RunResult]) -> None:
        for run in runs:
            for call in run.lm_calls:
                if call.error is not None or call.response is None or call.cached:
                    continue
                response = LMResponse(
                    text=call.response,
                    model=call.model,
                    prompt_tokens=call.prompt_tokens,
                    completion_tokens=call.completion_tokens,
                    cost_usd=call.cost_usd,
                    latency_s=call.latency_s,
                )
                if self.meter is not None:
                    self.meter.charge(response)
                if self.journal is not None:
                    request = LMRequest.model_validate({**call.request, "node": call.node})
                    self.journal.record(request, response)


def ledger_of(lm: LMClient) -> _Ledger | None:
    """The ledger of a client the workers can stand in for: the spec's own client (a ModelClient,
    maybe behind a context guard or cache) under the job's meter and journal; None otherwise."""
    meter = journal = None
    node: Any = lm
    for _ in range(16):
        if isinstance(node, ModelClient):
            return _Ledger(meter, journal)
        if isinstance(node, ContextGuard | CachedLM):
            pass
        elif hasattr(node, "meter") and hasattr(node.meter, "budget"):
            meter = node.meter
        elif callable(getattr(node, "record", None)) and hasattr(node, "entries"):
            journal = node
        else:
            return None  # a client of its own (a fake, a wrapper that changes requests)
        node = getattr(node, "inner", None)
    return None


class RayScoring:
    """Runs Scorer batches on a Ray job's workers (see the module docstring)."""

    def __init__(self, job: RayJob) -> None:
        self.job = job
        self.batches = 0
        self.local_batches = 0

    async def run_batch(
        self, compiled: CompiledPipeline, inputs: Sequence[Mapping[str, Any]], *, lm: LMClient
    ) -> list[RunResult]:
        ledger = ledger_of(lm)
        if ledger is None:
            if not self.local_batches:
                log.info("this job's pipeline client is its own (%s): its batches run in process", type(lm).__name__)
            self.local_batches += 1
            return await Executor(compiled, lm=lm).run_batch(inputs, concurrency=4)
        spent = ledger.spent()
        if spent is not None:
            return [_refused(compiled, i, spent) for i in inputs]
        self.batches += 1
        pool = self.job.pool
        if pool.allowance:
            await self.job.limits.set_allowance.remote(*ledger.allowance())
        art = pool.artifact(compiled)
        runs: dict[int, RunResult] = {}

        def call(worker: Any, i: int) -> Any:
            return worker.run_inputs.remote(art, dict(inputs[i]))

        def done(i: int, result: dict[str, Any]) -> None:
            if "error" in result:
                raise_payload(result["error"])
            run = run_from_json(result["run"])
            assert run is not None
            runs[i] = run

        await pool.run(list(range(len(inputs))), call, done, describe=lambda i: f"input {i}")
        ordered = [runs[i] for i in range(len(inputs))]
        ledger.charge(ordered)
        return ordered

    def summary(self) -> dict[str, Any]:
        return {**self.job.pool.describe(), "batches": self.batches, "local_batches": self.local_batches}


def _refused(compiled: CompiledPipeline, inputs: Mapping[str, Any], why: str) -> RunResult:
    return RunResult(
        run_id="refused",
        pipeline=compiled.name,
        artifact_hash=compiled.hash,
        inputs=dict(inputs),
        status="error",
        error=why,
        error_code="budget-exceeded",
    )


@contextlib.contextmanager
def ray_scoring(
    address: str | None = None,
    *,
    workers: int | None = None,
    per_worker: int = 4,
    cache: bool = True,
    budgeted: bool = False,
) -> Iterator[RayScoring]:
    """A `RayScoring` on a Ray job started for it (and torn down after). `budgeted`: the job has a
    calls or tokens budget, which the workers then charge to the shared allowance."""
    with ray_job(address, workers=workers, per_worker=per_worker, cache=cache, allowance=budgeted) as job:
        yield RayScoring(job)
