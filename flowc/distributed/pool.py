"""The workers of one command, and the queue that feeds them.

`WorkerPool.run(items, call, on_done)` hands each item to one worker slot (each worker takes
`per_worker` items at a time) and calls `on_done(item, result)` on the driver as each finishes,
in the driver's event loop: that is where results are checkpointed, so there is a single writer
and an item counts once. When a worker process dies (killed, out of memory, its node lost), every
item it held comes back to the queue and runs again on another worker, and the retry is recorded
(`retried`: which item, on which worker, why); the dead worker is replaced, up to as many
replacements as the pool has workers. An item is never lost: the queue is only done when every
item has a result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from flowc.compile import CompiledPipeline
from flowc.distributed.worker import ArtifactRef, PipelineWorker, WorkerSettings, artifact_json
from flowc.errors import FlowcError

log = logging.getLogger(__name__)

T = TypeVar("T")
START_TIMEOUT_S = 300.0  # Ray start-up is slow on a loaded machine; bounded all the same


@dataclass
class _Worker:
    handle: Any
    name: str = "?"
    pid: int = 0
    host: str = ""
    alive: bool = True
    replaced: bool = False


class WorkerPool:
    """`workers` Ray actors running `PipelineWorker`, each taking `per_worker` tasks at a time.

    Args:
        ray: the ray module (connected).
        workers: how many worker processes.
        settings: what each worker needs to know (cwd, FLOWC_HOME, cache on or off).
        limits: the shared limits actor (limits.py), or None.
        per_worker: tasks in flight per worker (they share its event loop: model calls overlap).
        cpus_per_worker: the CPU resource each worker reserves (fractional when asking for more
            workers than the cluster has CPUs).
        allowance: whether workers charge their calls to the limits actor's allowance (a budget).
    """

    def __init__(
        self,
        ray: Any,
        workers: int,
        settings: WorkerSettings,
        *,
        limits: Any | None = None,
        per_worker: int = 4,
        cpus_per_worker: float = 1.0,
        allowance: bool = False,
    ) -> None:
        self.ray = ray
        self.size = workers
        self.settings = settings
        self.limits = limits
        self.per_worker = max(1, per_worker)
        self.cpus = cpus_per_worker
        self.allowance = allowance
        self.workers: list[_Worker] = []
        self.retried: list[dict[str, Any]] = []
        self.replaced = 0
        self._artifacts: dict[str, ArtifactRef] = {}
        self._identifying: set[asyncio.Future[None]] = set()
        self._actor_cls = ray.remote(PipelineWorker)

    # -- life cycle -------------------------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start every worker and wait until each answers (their imports take seconds)."""
        self.workers = [self._spawn() for _ in range(self.size)]
        self._identify(self.workers, timeout_s)

    def _spawn(self) -> _Worker:
        handle = self._actor_cls.options(
            num_cpus=self.cpus,
            max_concurrency=max(8, 2 * self.per_worker),
            max_restarts=0,  # a dead worker is replaced by the pool, which knows what it held
            max_task_retries=0,
        ).remote(self.settings, self.limits, self.allowance)
        return _Worker(handle)

    def _identify(self, workers: Sequence[_Worker], timeout_s: float) -> None:
        try:
            infos = self.ray.get([w.handle.whoami.remote() for w in workers], timeout=timeout_s)
        except self.ray.exceptions.GetTimeoutError:
            raise FlowcError(
                "executor-unavailable",
                f"{len(workers)} Ray worker(s) did not start within {timeout_s:.0f} s",
                hint="check the cluster's free CPUs (ray status), or ask for fewer --workers",
            ) from None
        for w, info in zip(workers, infos, strict=True):
            w.name, w.pid, w.host = info["name"], int(info["pid"]), info["host"]

    def close(self) -> None:
        for w in self.workers:
            with contextlib.suppress(Exception):  # already gone
                self.ray.kill(w.handle)
        self.workers = []

    def pids(self) -> list[int]:
        """The process ids of the live workers (tests kill one)."""
        return [w.pid for w in self.workers if w.alive]

    def describe(self) -> dict[str, Any]:
        return {
            "executor": "ray",
            "workers": self.size,
            "per_worker": self.per_worker,
            "worker_names": [w.name for w in self.workers],
            "replaced_workers": self.replaced,
            "retried": list(self.retried),
        }

    # -- shipping pipelines -----------------------------------------------------------------------

    def artifact(self, compiled: CompiledPipeline) -> ArtifactRef:
        """The pipeline's artifact in the object store, put there once per hash."""
        found = self._artifacts.get(compiled.hash)
        if found is None:
            found = ArtifactRef(compiled.hash, self.ray.put(artifact_json(compiled)))
            self._artifacts[compiled.hash] = found
        return found

    # -- the work ---------------------------------------------------------------------------------

    async def run(
        self,
        items: Sequence[T],
        call: Callable[[Any, T], Any],
        on_done: Callable[[T, Any], None],
        *,
        stop: Callable[[], bool] = lambda: False,
        describe: Callable[[T], str] = str,
    ) -> None:
        """Run `call(worker_handle, item)` (returning an ObjectRef) for every item; `on_done` gets
        each result. Stops handing out items once `stop()` is true (those running finish)."""
        queue: asyncio.Queue[T] = asyncio.Queue()
        for item in items:
            queue.put_nowait(item)
        lost = asyncio.Event()
        slots: set[asyncio.Task[None]] = set()

        async def slot(worker: _Worker) -> None:
            while True:
                item = await queue.get()
                try:
                    if not worker.alive:  # died while this slot waited for work: hand the item on
                        queue.put_nowait(item)
                        return
                    if stop():
                        continue
                    result = await call(worker.handle, item)
                    on_done(item, result)  # before task_done: the queue is finished only once it is recorded
                except self.ray.exceptions.RayActorError as e:
                    queue.put_nowait(item)  # before task_done, so the queue never looks finished
                    self._worker_died(worker, describe(item), e)
                    replacement = self._replace(worker)
                    if replacement is not None:
                        start(replacement)
                    elif not any(w.alive for w in self.workers):
                        lost.set()
                    return
                finally:
                    queue.task_done()

        def start(worker: _Worker) -> None:
            for _ in range(self.per_worker):
                task = asyncio.ensure_future(slot(worker))
                slots.add(task)

        for w in self.workers:
            if w.alive:
                start(w)
        done: asyncio.Future[Any] = asyncio.ensure_future(queue.join())
        gone: asyncio.Future[Any] = asyncio.ensure_future(lost.wait())
        try:
            while not (done.done() or gone.done()):
                waiting: set[asyncio.Future[Any]] = {done, gone, *slots}
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                for t in [t for t in slots if t.done()]:
                    slots.discard(t)
                    error = t.exception()
                    if error is not None:  # not a dead worker: a bug, or the driver's own error
                        raise error
            if not done.done():
                raise FlowcError(
                    "worker-lost",
                    f"every Ray worker died, and {self.replaced} replacement(s) with them; "
                    f"{queue.qsize()} example(s) were left to run",
                    hint="see the Ray logs (/tmp/ray/session_latest/logs); what finished is kept: --resume continues",
                )
        finally:
            for f in (done, gone, *slots):
                f.cancel()

    def _worker_died(self, worker: _Worker, item: str, error: BaseException) -> None:
        if worker.alive:
            log.warning("Ray worker %s died: %s", worker.name, str(error).splitlines()[0][:200])
        worker.alive = False
        self.retried.append(
            {"id": item, "worker": worker.name, "reason": type(error).__name__, "at": round(time.time(), 3)}
        )

    def _replace(self, dead: _Worker) -> _Worker | None:
        """A new worker in place of `dead`, once per dead worker (as many as the pool's size)."""
        if dead.replaced or self.replaced >= self.size:
            return None
        dead.replaced = True
        self.replaced += 1
        new = self._spawn()
        self.workers.append(new)

        async def identify() -> None:
            info = await new.handle.whoami.remote()
            new.name, new.pid, new.host = info["name"], int(info["pid"]), info["host"]

        self._identifying.add(asyncio.ensure_future(identify()))
        return new
