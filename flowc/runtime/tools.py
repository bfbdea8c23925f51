"""Tools: Python functions a `tool` node calls, registered by name — through the Python API
(`ToolRegistry.register`) or the `flowc.plugins` entry-point group — never by an import path
written in a spec."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from flowc.errors import FlowcError, RuntimeFlowError

Tool = Callable[..., Any]


class ToolRegistry:
    def __init__(self, tools: dict[str, Tool] | None = None, *, load_plugins: bool = True) -> None:
        self._tools: dict[str, Tool] = {}
        if load_plugins:
            for ep in entry_points(group="flowc.plugins"):
                obj = ep.load()
                if callable(obj) and not isinstance(obj, type):
                    self.register(getattr(obj, "flowc_tool_name", ep.name), obj)
        for name, fn in (tools or {}).items():
            self.register(name, fn)

    def register(self, name: str, fn: Tool) -> Tool:
        if name in self._tools and self._tools[name] is not fn:
            raise FlowcError(
                "duplicate-plugin",
                f"a tool named '{name}' is already registered",
                hint="register it under another name",
            )
        self._tools[name] = fn
        return fn

    def names(self) -> list[str]:
        return sorted(self._tools)

    async def call(self, name: str, node: str, kwargs: dict[str, Any]) -> Any:
        fn = self._tools.get(name)
        if fn is None:
            raise RuntimeFlowError(
                "tool-not-registered",
                f"no tool named '{name}' is registered",
                node=node,
                hint=f"register it: ToolRegistry({{'{name}': my_function}}) or a flowc.plugins entry point",
            )
        try:
            if inspect.iscoroutinefunction(fn):
                return await fn(**kwargs)
            return await asyncio.to_thread(fn, **kwargs)
        except Exception as e:  # the tool's own failure, reported with its place
            raise RuntimeFlowError(
                "tool-failed",
                f"tool '{name}' raised {type(e).__name__}: {e}",
                node=node,
                hint="fix the tool, or check the inputs bound to it",
            ) from e
