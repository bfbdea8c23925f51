"""The worker: one Ray actor process that runs examples of compiled pipelines.

A pipeline reaches a worker as its JSON artifact, put once into the object store by the driver;
the worker fetches it the first time a task names its hash and rebuilds the compiled pipeline
(checking the content hash), then keeps it. Each worker owns what a local run owns: its model
clients (one per set of model policies, so an embedded model is loaded once per worker process
and stays loaded), its response cache, and its executors. What it sends back is plain JSON-able
data: the evaluation row and the full run (steps, LM calls, attempts), which the driver writes
into its own checkpoint and run store.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.runtime.config import RunConfig
from flowc.runtime.executor import Executor
from flowc.runtime.lm import LMClient
from flowc.runtime.trace import RunResult, StepRecord


@dataclass(frozen=True)
class WorkerSettings:
    """What every worker of a job shares. `cwd` and `home` are the driver's (absolute): on the
    same machine, or on a cluster whose nodes share the file system, relative paths in specs
    (corpora, custom metrics) resolve as they do for the driver."""

    cwd: str
    home: str
    cache: bool = True


@dataclass(frozen=True)
class ArtifactRef:
    """A compiled pipeline in the object store: its hash and the reference to its artifact (JSON
    text). Nested in this object the reference is not resolved by Ray before each task, so the
    worker fetches the artifact only the first time it meets the hash."""

    hash: str
    ref: Any


@dataclass(frozen=True)
class MetricArgs:
    """How the driver bound its metrics (`bind_metrics`'s arguments), to bind the same on a worker."""

    names: tuple[str, ...]
    output: str | None
    target: str | None


class _CollectRuns:
    """A run store that only keeps each finished run (the driver stores it)."""

    def __init__(self) -> None:
        self.finished: dict[str, RunResult] = {}

    def begin_run(self, run: RunResult) -> None:
        pass

    def add_step(self, run_id: str, step: StepRecord) -> None:
        pass

    def end_run(self, run: RunResult) -> None:
        self.finished[run.run_id] = run


class PipelineWorker:
    """Runs examples; the body of the Ray actor (`pool.py` wraps it with `ray.remote`)."""

    def __init__(self, settings: WorkerSettings, limits: Any | None = None, allowance: bool = False) -> None:
        self.settings = settings
        self.limits = limits
        self.allowance = allowance
        if Path(settings.cwd).is_dir():
            os.chdir(settings.cwd)
        os.environ["FLOWC_HOME"] = settings.home
        cpus = _assigned_cpus()
        if cpus:  # an embedded model uses this worker's share of the cores, not all of them
            os.environ.setdefault("FLOWC_LOCAL_THREADS", str(cpus))
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._pipelines: dict[str, CompiledPipeline] = {}
        self._clients: dict[str, LMClient] = {}
        self._executors: dict[str, tuple[Executor, _CollectRuns]] = {}
        self._cache: Any = None
        self._retrievers: Any = None  # corpora and indexes, shared by every pipeline of the worker
        self._bound: dict[tuple[str, MetricArgs], list[Any]] = {}

    def whoami(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "host": socket.gethostname(), "name": self.name}

    def cpu_seconds(self) -> float:
        """CPU time this worker process has used (user + system), for benchmarks."""
        times = os.times()
        return times.user + times.system

    # -- the work ------------------------------------------------------------------------------

    async def run_example(self, art: ArtifactRef, record: Mapping[str, Any], metric_args: MetricArgs) -> dict[str, Any]:
        """One evaluation example: `{"row": row, "run": run}` (both JSON-able)."""
        from flowc.runtime.evaluate import ExampleRunner

        try:
            ex, runs = await self._executor(art)
            key = (art.hash, metric_args)
            metrics = self._bound.get(key)
            if metrics is None:
                metrics = self._bound[key] = self._metrics(ex, metric_args)
            row = await ExampleRunner(ex, metrics).run(record)
        except FlowcError as e:  # a mistake of the setup (a metric that cannot score): the driver raises it
            return {"error": error_payload(e), "worker": self.name}
        run = runs.finished.pop(row["run_id"], None)
        return {"row": row, "run": _dump(run, self.name), "worker": self.name}

    async def run_inputs(self, art: ArtifactRef, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """One run of the pipeline on `inputs` (an optimizer's forward pass)."""
        try:
            ex, runs = await self._executor(art)
        except FlowcError as e:
            return {"error": error_payload(e), "worker": self.name}
        result = await ex.run(inputs)
        runs.finished.pop(result.run_id, None)
        return {"run": _dump(result, self.name), "worker": self.name}

    # -- what a worker keeps --------------------------------------------------------------------

    async def _executor(self, art: ArtifactRef) -> tuple[Executor, _CollectRuns]:
        found = self._executors.get(art.hash)
        if found is not None:
            return found
        compiled = await self._pipeline(art)
        runs = _CollectRuns()
        lm = self._client(compiled)
        if self.settings.cache:
            from flowc.runtime.cache import CachedLM, ResponseCache

            if self._cache is None:
                self._cache = ResponseCache(Path(self.settings.home) / "cache.sqlite")
            lm = CachedLM(lm, self._cache, compiled.hash)
        config = RunConfig()
        if self._retrievers is None:
            from flowc.runtime.resources import RetrieverPool

            self._retrievers = RetrieverPool(config.cache_dir)
        ex = Executor(compiled, lm=lm, store=runs, config=config, retrievers=self._retrievers)
        if len(self._executors) >= 64:  # an optimization job sends many candidates: keep the recent ones
            self._executors.pop(next(iter(self._executors)))
        self._executors[art.hash] = (ex, runs)
        return ex, runs

    async def _pipeline(self, art: ArtifactRef) -> CompiledPipeline:
        compiled = self._pipelines.get(art.hash)
        if compiled is None:
            data = await art.ref
            compiled = CompiledPipeline.from_artifact_data(json.loads(data), f"artifact {art.hash[:12]}")
            if compiled.hash != art.hash:
                raise FlowcError(
                    "artifact-invalid",
                    f"the worker rebuilt '{compiled.name}' as {compiled.hash[:12]}, the driver sent {art.hash[:12]}",
                    hint="run the same flowc version on the driver and on every Ray node",
                )
            if len(self._pipelines) >= 64:
                self._pipelines.pop(next(iter(self._pipelines)))
            self._pipelines[art.hash] = compiled
        return compiled

    def _client(self, compiled: CompiledPipeline) -> LMClient:
        """One client per set of model policies: candidates of an optimization job that differ only
        in prompts share it (and its connections, and the embedded model)."""
        from flowc.runtime import session
        from flowc.runtime.limits import ContextGuard

        pols = session.policies(compiled)
        key = json.dumps({m: repr(p) for m, p in sorted(pols.items())})
        client = self._clients.get(key)
        if client is None:
            limiters = None
            if self.limits is not None:
                from flowc.distributed.limits import SharedLimiters

                limiters = SharedLimiters(self.limits, self.name)
            client = ContextGuard(session.default_client(compiled, limiters=limiters))
            if self.allowance and self.limits is not None:
                from flowc.distributed.limits import AllowanceLM

                client = AllowanceLM(client, self.limits)
            self._clients[key] = client
        return client

    def _metrics(self, ex: Executor, args: MetricArgs) -> list[Any]:
        from flowc.runtime.evaluate import bind_metrics
        from flowc.runtime.judge import judge_for

        compiled = ex.compiled
        return bind_metrics(
            compiled.spec.metrics,
            args.names,
            args.output,
            args.target,
            next(iter(compiled.spec.outputs)),
            judge_of=lambda name, model: judge_for(name, model, compiled.spec.models, ex.lm),
        )


def _dump(run: RunResult | None, worker: str) -> dict[str, Any] | None:
    if run is None:
        return None
    run.meta = {**run.meta, "executor": "ray", "worker": worker}
    return run.model_dump(mode="json")


def run_from_json(data: Mapping[str, Any] | None) -> RunResult | None:
    return RunResult.model_validate(data) if data is not None else None


def error_payload(e: FlowcError) -> dict[str, Any]:
    """A FlowcError as data (an exception with keyword arguments does not survive pickling intact)."""
    return {"code": e.code, "message": e.diagnostic.message, "hint": e.hint}


def raise_payload(payload: Mapping[str, Any]) -> None:
    raise FlowcError(payload["code"], payload["message"], hint=payload.get("hint"))


def artifact_json(compiled: CompiledPipeline) -> str:
    return json.dumps(compiled.to_artifact(), ensure_ascii=False)


__all__: Sequence[str] = ("ArtifactRef", "MetricArgs", "PipelineWorker", "WorkerSettings")


def _assigned_cpus() -> int:
    """The whole CPUs Ray reserved for this actor (at least 1), or 0 outside a Ray actor."""
    try:
        import ray

        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 0)
    except Exception:  # not in a Ray worker (a unit test builds the class directly)
        return 0
    return max(1, int(cpus)) if cpus else 0
