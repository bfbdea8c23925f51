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
from flowc.spec.exprs import Coalesce, Expr, History, Ref
from flowc.spec.models import MapNode


@dataclass(frozen=True)
class CostEstimate:
    best_calls: int
    worst_calls: int | None  # None: unbounded (a map without max_items)
    per_node: dict[str, tuple[int, int | None]]

    def to_json(self) -> dict[str, Any]:
        return {
            "best_calls": self.best_calls,
            "worst_calls": self.worst_calls,
            "per_node": {k: {"best": b, "worst": w} for k, (b, w) in self.per_node.items()},
        }


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
        fan: int | None = 1
        if isinstance(node.spec, MapNode):
            fan = node.spec.max_items
        if node.subflow is not None:  # a subflow, or a map over one: its own calls
            inner = estimate(node.subflow)
            unit_best, unit_worst = inner.best_calls, inner.worst_calls
        elif node.is_llm:
            unit_best, unit_worst = 1, 1
        else:
            continue
        if node.name not in able:
            per_node[node.name] = (0, 0)
            continue
        worst = None if fan is None or unit_worst is None else repeat[node.name] * fan * unit_worst
        best = unit_best if node.name in runs_best else 0
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
            forward = [
                c
                for c in n.route.choices
                if not any(e.loop for e in graph.in_edges(c) if e.src == n.name and e.kind == "route")
            ]
            pick = n.route.fallback if n.route.fallback in forward else (forward[0] if forward else None)
            if pick:
                chosen[n.name] = pick
    ran = {INPUT}
    for name in graph.topo_order():
        if name in ran or name.startswith("$"):
            continue
        ins = [e for e in graph.in_edges(name) if e.loop is None]
        data = [e for e in ins if e.kind != "route"]
        gates = graph.gates(name)
        if gates:
            chosen_here = any(chosen.get(r) == name and r in ran for r in gates)
            # Enabled: a value arrives from a node that ran downstream of a gating router
            # (`graph.enablers(name)`, asked as a bounded reachability query per router).
            senders = {e.src for e in data if e.src in ran and e.src != name}
            enabled = not chosen_here and any(graph.reaches(r, senders) for r in gates)
            if not (chosen_here or enabled):
                continue
        node = graph.node(name)
        if all(any(_ready(o, ran) for o in _options(expr)) for expr in node.bindings.values()):
            ran.add(name)
    return ran


def _options(expr: Expr) -> tuple[Expr, ...]:
    return expr.options if isinstance(expr, Coalesce) else (expr,)


def _ready(e: Expr, ran: set[str]) -> bool:
    if isinstance(e, History):
        return e.ref.node in ran
    if isinstance(e, Ref):
        return e.node is None or e.node in ran
    return True
