"""check-routes: a router's fallback is one of its choices, and every router has one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flowc.ir.graph import FlowGraph
from flowc.passes.base import Pass, PassContext
from flowc.spec.models import LLMNode, MapNode, ToolNode
from flowc.spec.types import EnumT


@dataclass(frozen=True)
class CheckRoutesPass(Pass):
    name: ClassVar[str] = "check-routes"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        spec = ctx.spec
        for node in graph.nodes():
            llm = node.spec if isinstance(node.spec, LLMNode) else None
            if node.route is None:
                if llm is not None and llm.fallback is not None:
                    ctx.report(
                        "route-fallback-not-a-choice",
                        f"node '{node.name}' has a fallback but no route output",
                        spec.span("nodes", node.name, "fallback"),
                        "declare 'output next: route[a, b]', or remove the fallback",
                    )
                continue
            r = node.route
            if r.fallback is None:
                ctx.report(
                    "route-without-fallback",
                    f"router '{node.name}' has no fallback for answers outside {', '.join(r.choices)}",
                    spec.key_span("nodes", node.name, "outputs", r.port),
                    f"add 'fallback: {r.choices[-1]}' so a bad answer has somewhere to go",
                    severity="warning",
                )
            elif r.fallback not in r.choices:
                ctx.report(
                    "route-fallback-not-a-choice",
                    f"the fallback '{r.fallback}' of '{node.name}' is not one of its choices ({', '.join(r.choices)})",
                    spec.span("nodes", node.name, "fallback"),
                    f"add '{r.fallback}' to route[...] or choose one of: {', '.join(r.choices)}",
                )
        for name, spec_node in spec.nodes.items():
            if isinstance(spec_node, MapNode) and isinstance(spec_node.body, LLMNode):
                self.map_body(ctx, name, spec_node.body)
            tool = spec_node.body if isinstance(spec_node, MapNode) else spec_node
            if isinstance(tool, ToolNode):
                base = ("nodes", name) if tool is spec_node else ("nodes", name, "body")
                for port, t in tool.outputs.items():
                    if isinstance(t, EnumT) and t.route:  # lowering builds routes for llm nodes only
                        ctx.report(
                            "invalid-value",
                            f"tool node '{name}' has a route output '{port}'; only llm nodes route",
                            spec.key_span(*base, "outputs", port),
                            "make it an enum[...] output and route with an llm node, or drop it",
                        )
        return graph

    def map_body(self, ctx: PassContext, name: str, body: LLMNode) -> None:
        """A map's body runs once per item, so it cannot pick the next node: lowering drops its
        route (the map node has none), and without this check the spec would silently not route."""
        spec = ctx.spec
        routes = [k for k, t in body.outputs.items() if isinstance(t, EnumT) and t.route]
        if routes:
            ctx.report(
                "invalid-value",
                f"the body of map '{name}' has a route output '{routes[0]}'; a body runs once per item "
                "and cannot pick the next node",
                spec.key_span("nodes", name, "body", "outputs", routes[0]),
                "make it an enum[...] output, or route from a node after the map",
            )
        elif body.fallback is not None:
            ctx.report(
                "route-fallback-not-a-choice",
                f"the body of map '{name}' has a fallback but no route output",
                spec.span("nodes", name, "body", "fallback"),
                "remove the fallback: a map's body does not route",
            )
