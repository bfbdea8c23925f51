"""Optimizers by name, built in and from plugins (entry-point group `flowc.plugins`)."""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from flowc.errors import FlowcError

_BUILTIN = {
    "bootstrap": ("flowc.optimizers.bootstrap", "BootstrapFewShot"),
    "textgrad": ("flowc.optimizers.textgrad", "TextGrad"),
    "tep": ("flowc.optimizers.tep", "TEP"),
    "gepa": ("flowc.optimizers.gepa", "GEPA"),
    "jade": ("flowc.optimizers.jade", "Jade"),
    "poqd": ("flowc.optimizers.poqd", "POQD"),
    # DSPy's optimizers through the DSPy export (need the `dspy` extra when they run)
    "dspy:MIPROv2": ("flowc.optimizers.dspy", "MIPROv2"),
    "dspy:BootstrapFewShotWithRandomSearch": ("flowc.optimizers.dspy", "BootstrapFewShotWithRandomSearch"),
    "dspy:BootstrapFewShot": ("flowc.optimizers.dspy", "BootstrapFewShot"),
    "dspy:GEPA": ("flowc.optimizers.dspy", "GEPA"),
    "dspy:SIMBA": ("flowc.optimizers.dspy", "SIMBA"),
}


def available() -> dict[str, Callable[..., Any]]:
    found: dict[str, Callable[..., Any]] = {}
    for name, (module, attr) in _BUILTIN.items():
        try:
            found[name] = getattr(importlib.import_module(module), attr)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
    for ep in entry_points(group="flowc.plugins"):
        obj = ep.load()
        plugin_name = getattr(obj, "name", None)
        if isinstance(obj, type) and hasattr(obj, "optimize") and isinstance(plugin_name, str):
            name = plugin_name
            if name in found:
                raise FlowcError(
                    "duplicate-plugin",
                    f"optimizer '{name}' from '{ep.value}' is already defined",
                    hint="rename the plugin's optimizer",
                )
            found[name] = obj
    return found


def get_optimizer(name: str) -> Callable[..., Any]:
    opts = available()
    if name not in opts:
        close = difflib.get_close_matches(name, list(opts), n=1)
        raise FlowcError(
            "unknown-name",
            f"no optimizer named '{name}'",
            hint=f"did you mean '{close[0]}'?" if close else f"optimizers: {', '.join(opts)}",
        )
    return opts[name]
