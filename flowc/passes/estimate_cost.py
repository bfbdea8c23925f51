"""estimate-cost: LM calls per pipeline input, best and worst case.

Worst case: every router branch runs and every loop is taken `max` times (nested loops multiply);
a map's body runs `max_items` times (unknown when the map declares none). Best case: loops exit at
once, each router takes its fallback (or its first choice), and only what that reaches runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from flowc.ir.graph import INPUT, FlowGraph
from flowc.passes.base import Pass, PassContext
from flowc.passes.check_reachability import can_run
from flowc.spec.models import MapNode


@dataclass(frozen=True)
class CostEstimate:
    best_calls: int
    worst_calls: int | None  # None: unbounded (a map without max_items)
    per_node: dict[str, tuple[int, int | None]]

    def to_json(self) -> dict[str, Any]:
        return {"best_calls": self.best_calls, "worst_calls": self.worst_calls,
                "per_node": {k: {"best": b, "worst": w} for k, (b, w) in self.per_node.items()}}


@dataclass(frozen=True)
class EstimateCostPass(Pass):
    name: ClassVar[str] = "estimate-cost"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        ctx.results[self.name] = estimate(graph)
        return graph


def estimate(graph: FlowGraph) -> CostEstimate:
    able = can_run(graph)
    runs_best = _best_case(graph)
    repeat: dict[str, int] = {n.name: 1 for n in graph.nodes()}
    for loop in graph.loops:
        for member in graph.loop_members(loop):
            if member in repeat:
                repeat[member] *= 1 + graph.loops[loop].max
    per_node: dict[str, tuple[int, int | None]] = {}
    for node in graph.nodes():
        if not node.is_llm:
            continue
        fan: int | None = 1
        if isinstance(node.spec, MapNode):
            fan = node.spec.max_items
        worst = None if fan is None else (repeat[node.name] * fan if node.name in able else 0)
        best = (1 if fan is not None else 1) if node.name in runs_best else 0
        per_node[node.name] = (best, worst)
    best_total = sum(b for b, _ in per_node.values())
    worst_total: int | None = 0
    for _, w in per_node.values():
        worst_total = None if (w is None or worst_total is None) else worst_total + w
    return CostEstimate(best_total, worst_total, per_node)


def _best_case(graph: FlowGraph) -> set[str]:
    """Nodes that run when loops exit at once and routers take their fallback."""
    chosen: dict[str, str] = {}
    for n in graph.nodes():
        if n.route is not None:
            forward = [c for c in n.route.choices
                       if not any(e.loop for e in graph.in_edges(c) if e.src == n.name and e.kind == "route")]
            pick = n.route.fallback if n.route.fallback in forward else (forward[0] if forward else None)
            if pick:
                chosen[n.name] = pick
    ran = {INPUT}
    for name in graph.topo_order():
        if name in ran or name.startswith("$"):
            continue
        ins = [e for e in graph.in_edges(name) if e.loop is None]
        routed = [e for e in ins if e.kind == "route"]
        if routed and not any(chosen.get(e.src) == name and e.src in ran for e in routed):
            continue
        data = [e for e in ins if e.kind != "route"]
        ports: dict[str, bool] = {}
        for e in data:
            ports[e.dst_port] = ports.get(e.dst_port, False) or e.src in ran
        if all(ports.values()):
            ran.add(name)
    return ran
