"""The type of value an input port receives, for checks that need more than the port's own type."""

from __future__ import annotations

from flowc.ir.graph import FlowGraph
from flowc.spec.types import ANY, ListT, TypeExpr


def delivered_type(graph: FlowGraph, node: str, port: str) -> TypeExpr:
    """The type an input port takes: its own, or else the one its bindings deliver when they agree
    (an llm node's input is typed by what is bound to it; a pipeline output may omit its type)."""
    own = graph.node(node).inputs[port].type if port in graph.node(node).inputs else ANY
    if own != ANY:
        return own
    delivered = set()
    for e in graph.in_edges(node):
        if e.dst_port == port and e.kind in ("data", "history"):
            t = graph.node(e.src).outputs[e.src_port].type
            delivered.add(ListT(t) if e.kind == "history" else t)
    return delivered.pop() if len(delivered) == 1 else ANY
