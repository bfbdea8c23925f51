"""check-cycles: every cycle of the graph goes through a declared, bounded loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flowc.ir.graph import FlowGraph
from flowc.passes.base import Pass, PassContext

MAX_REPORTED = 5


@dataclass(frozen=True)
class CheckCyclesPass(Pass):
    name: ClassVar[str] = "check-cycles"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        order = {n.name: i for i, n in enumerate(graph.nodes(pseudo=True))}
        cycles = graph.unbounded_cycles(MAX_REPORTED)
        for cycle in cycles:
            # The closing edge is the one into the node declared first: it reads "backwards".
            i = min(range(len(cycle) - 1), key=lambda k: order.get(cycle[k + 1], 0))
            src, dst = cycle[i], cycle[i + 1]
            edge = next((e for e in graph.in_edges(dst) if e.src == src), None)
            span = edge.span if edge else ctx.spec.key_span("nodes", dst)
            path = cycle[i + 1 : -1] + cycle[: i + 2]
            ctx.report(
                "unbounded-cycle",
                f"cycle without a bound: {' -> '.join(path)}",
                span,
                f"declare it: 'loop <name>: {src} -> {dst} max 3'",
            )
        return graph
