"""Pass names → factories, built in and from plugins (entry-point group `flowc.plugins`)."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from importlib.metadata import entry_points

from flowc.errors import FlowcError
from flowc.passes.base import Pass


def _builtin() -> dict[str, Callable[[], type[Pass]]]:
    def lazy(module: str, cls: str) -> Callable[[], type[Pass]]:
        def load() -> type[Pass]:
            import importlib

            pass_cls: type[Pass] = getattr(importlib.import_module(f"flowc.passes.{module}"), cls)
            return pass_cls

        return load

    return {
        "check-inputs": lazy("check_inputs", "CheckInputsPass"),
        "check-types": lazy("check_types", "CheckTypesPass"),
        "check-templates": lazy("check_templates", "CheckTemplatesPass"),
        "check-routes": lazy("check_routes", "CheckRoutesPass"),
        "check-cycles": lazy("check_cycles", "CheckCyclesPass"),
        "check-reachability": lazy("check_reachability", "CheckReachabilityPass"),
        "check-declarations": lazy("check_declarations", "CheckDeclarationsPass"),
        "estimate-cost": lazy("estimate_cost", "EstimateCostPass"),
    }


#: The passes `compile` runs when none are named, in order.
DEFAULT_PASSES = (
    "check-inputs",
    "check-types",
    "check-templates",
    "check-routes",
    "check-cycles",
    "check-reachability",
    "check-declarations",
    "estimate-cost",
)


@cache
def all_passes() -> dict[str, Callable[[], type[Pass]]]:
    """Built-in passes plus plugins' (`flowc.plugins` entry points whose object is a Pass subclass)."""
    found = dict(_builtin())
    for ep in entry_points(group="flowc.plugins"):
        obj = ep.load()
        if isinstance(obj, type) and issubclass(obj, Pass):
            if obj.name in found:
                raise FlowcError(
                    "duplicate-plugin",
                    f"pass '{obj.name}' from plugin '{ep.value}' is already defined",
                    hint="rename the plugin's pass",
                )
            found[obj.name] = lambda o=obj: o  # type: ignore[misc]
    return found


def get_pass(name: str) -> type[Pass]:
    passes = all_passes()
    if name not in passes:
        import difflib

        close = difflib.get_close_matches(name, list(passes), n=1)
        raise FlowcError(
            "unknown-pass",
            f"no pass named '{name}'",
            hint=f"did you mean '{close[0]}'?" if close else f"passes: {', '.join(passes)}",
        )
    return passes[name]()
