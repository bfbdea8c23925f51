"""Connecting to Ray for one command: an existing cluster, or a local instance started for it.

- `address=None`: a local Ray instance is started for the duration of the command (no dashboard,
  `workers` CPUs, by default all of this machine's) and shut down at the end; its processes are
  tied to the command's process, so they also go when it is killed;
- `address="auto"` (a cluster started with `ray start` on this machine) or `"ray://host:10001"`
  (Ray Client) or `"host:6379"`: that cluster, left running at the end;
- Ray already initialized in this process (a notebook, a test fixture): used as it is.

`RayJob` then owns what the command started on the cluster: the limits actor and the worker pool,
both removed when it ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowc.distributed import import_ray
from flowc.distributed.limits import LimitsService
from flowc.distributed.pool import START_TIMEOUT_S, WorkerPool
from flowc.distributed.worker import WorkerSettings
from flowc.errors import FlowcError


@dataclass
class RayJob:
    """The workers and the shared limits of one command."""

    ray: Any
    pool: WorkerPool
    limits: Any

    def grants(self) -> list[tuple[float, str, str]]:
        """Every rate-limit grant the limits actor made: (time, model, worker)."""
        return list(self.ray.get(self.limits.grants.remote()))


def cluster_cpus(ray: Any) -> int:
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


@contextlib.contextmanager
def connect(address: str | None = None, *, workers: int | None = None) -> Iterator[Any]:
    """The ray module, connected as the docstring above says; disconnects (and stops a local
    instance it started) at the end."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        "logging_level": logging.WARNING,
        "configure_logging": False,
    }
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=workers or os.cpu_count() or 1, **options)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise FlowcError(
            "executor-unavailable",
            f"cannot {'connect to the Ray cluster at ' + address if address else 'start a local Ray instance'}: "
            f"{str(e).splitlines()[0] if str(e) else type(e).__name__}",
            hint="check --address (auto: a cluster started with 'ray start' on this machine; ray://HOST:10001)"
            if address
            else "see /tmp/ray/session_latest/logs, or run without --executor ray",
        ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


@contextlib.contextmanager
def ray_job(
    address: str | None = None,
    *,
    workers: int | None = None,
    per_worker: int = 4,
    cache: bool = True,
    allowance: bool = False,
    start_timeout_s: float = START_TIMEOUT_S,
) -> Iterator[RayJob]:
    """Ray connected, a limits actor and `workers` started workers (default: one per CPU of the
    cluster); everything this started is gone at the end."""
    with connect(address, workers=workers) as ray:
        cpus = cluster_cpus(ray)
        n = workers or cpus
        if n < 1:
            raise FlowcError("invalid-value", f"--workers {n}: need at least one worker", hint="--workers 2")
        limits = ray.remote(LimitsService).options(num_cpus=0, max_concurrency=10_000).remote()
        settings = WorkerSettings(cwd=str(Path.cwd().resolve()), home=str(_home().resolve()), cache=cache)
        pool = WorkerPool(
            ray,
            n,
            settings,
            limits=limits,
            per_worker=per_worker,
            cpus_per_worker=min(1.0, cpus / n),
            allowance=allowance,
        )
        try:
            pool.start(start_timeout_s)
            yield RayJob(ray, pool, limits)
        finally:
            pool.close()
            with contextlib.suppress(Exception):
                ray.kill(limits)


def _home() -> Path:
    from flowc.runtime.session import home

    return home()
