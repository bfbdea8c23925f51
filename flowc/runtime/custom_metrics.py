"""Metrics written in Python, named on the command line: `--metric module:function`.

The same rule as tools: a spec never makes flowc import code. A spec names only the built-in
metrics (and `llm_judge`); Python code is imported only because the user asked for it on the
command line (`--metric mymetrics:score`, or `--metric path/to/metrics.py:score`), or passed as a
callable through the Python API. The module is looked up on `sys.path` and then in the current
directory, like `python -m` does.

The function takes `(prediction, target)` or `(prediction, target, example)` (the whole dataset
record) and returns a number — higher is better, 1.0 a perfect score — or a bool.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime.metrics import Metric

HINT = "write --metric MODULE:FUNCTION (e.g. mymetrics:score, or path/to/metrics.py:score)"


def is_custom(name: str) -> bool:
    """Whether a `--metric` value names Python code rather than a built-in metric."""
    return ":" in name


def load_custom_metric(ref: str) -> tuple[Metric, bool]:
    """The metric `module:function` (or `file.py:function`) as a flowc Metric whose function takes
    `(prediction, target, example)`, and whether the user's function wants the example."""
    module_ref, _, attr = ref.rpartition(":")
    if not module_ref or not attr.isidentifier():
        raise FlowcError("unknown-metric", f"'{ref}' is not MODULE:FUNCTION", hint=HINT)
    module = _import(module_ref, ref)
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        found = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise FlowcError(
            "unknown-metric",
            f"'{module_ref}' has no function '{attr}'",
            hint=f"functions there: {', '.join(found[:10]) or 'none'}",
        )
    takes_example = _takes_example(fn)

    def score(prediction: Any, target: Any, example: Any = None) -> float:
        value = fn(prediction, target, example) if takes_example else fn(prediction, target)
        return as_score(value, ref)

    return Metric(ref, score, (inspect.getdoc(fn) or f"{ref} (Python)").splitlines()[0]), takes_example


def as_score(value: Any, name: str) -> float:
    """A metric's return value as a float; anything but a finite number (or a bool) is an error."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    raise FlowcError(
        "invalid-value",
        f"metric '{name}' returned {value!r:.80}, not a number",
        hint="return a float (1.0 for a perfect score) or a bool",
    )


def _import(module_ref: str, ref: str) -> ModuleType:
    if module_ref.endswith(".py") or "/" in module_ref:
        path = Path(module_ref)
        if not path.is_file():
            raise FlowcError("unknown-metric", f"no Python file '{module_ref}' for metric '{ref}'", hint=HINT)
        spec = importlib.util.spec_from_file_location(f"flowc_user_metric_{path.stem}", path)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
            raise FlowcError("unknown-metric", f"cannot load '{module_ref}'", hint=HINT)
        module = importlib.util.module_from_spec(spec)
        _run_module(lambda: spec.loader.exec_module(module), ref)  # type: ignore[union-attr]
        return module
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.append(cwd)  # after everything installed: a local file never shadows a package
    try:
        return _run_module(lambda: importlib.import_module(module_ref), ref)
    except ModuleNotFoundError as e:
        if e.name and module_ref.startswith(e.name):
            raise FlowcError(
                "unknown-metric",
                f"no Python module '{module_ref}' for metric '{ref}' (looked on sys.path and in {cwd})",
                hint=HINT,
            ) from None
        raise
    finally:
        if added:
            sys.path.remove(cwd)


def _run_module(load: Callable[[], Any], ref: str) -> Any:
    try:
        return load()
    except ModuleNotFoundError:
        raise
    except Exception as e:  # the user's module failed while importing: say so, with where
        raise FlowcError(
            "unknown-metric",
            f"importing the module of metric '{ref}' raised {type(e).__name__}: {e}",
            hint="fix the module (run it with python to see the traceback)",
        ) from e


def _takes_example(fn: Callable[..., Any]) -> bool:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in params)
