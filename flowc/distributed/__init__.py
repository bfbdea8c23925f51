"""Running evaluations and optimizer scoring on Ray: many processes, many machines.

The layer sits between the optimizers and the runtime (`cli → optimizers → distributed → runtime`)
and is the only place that imports `ray` (an optional extra: `pip install 'flowc[ray]'`):

- `cluster.py`: connect to a cluster (`--address auto|ray://...`) or start a local Ray instance for
  the duration of one command;
- `limits.py`: one actor owns the RPM/TPM buckets, so rate limits hold across every worker;
- `worker.py`: the worker actor: rebuilds a pipeline from its artifact once, keeps its own model
  clients, embedded model and response cache, and runs examples;
- `pool.py`: the workers, a queue of work, and retries on another worker when one dies;
- `eval.py`: `flowc eval --executor ray`: rows stream back into the same checkpoint and run store;
- `scoring.py`: the optimizers' batch evaluations (`Scorer`) on the same pool.

docs/scaling.md says how to use it and what changes at scale.
"""

from __future__ import annotations

from typing import Any

from flowc.errors import FlowcError


def import_ray() -> Any:
    """The `ray` module, or a clear error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise FlowcError(
            "executor-unavailable",
            "--executor ray needs Ray, which is not installed",
            hint="pip install 'flowc[ray]' (or run without --executor ray)",
        ) from None
    return ray
