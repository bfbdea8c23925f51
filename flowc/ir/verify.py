"""IR invariants, checked after every pass: a broken invariant is a bug in the pass that ran."""

from __future__ import annotations

from flowc.errors import FlowcError
from flowc.ir.graph import INPUT, OUTPUT, FlowGraph


def verify(graph: FlowGraph, after: str = "lower") -> None:
    """Raise FlowcError(ir-verify-failed) naming the pass `after` which the IR went wrong."""
    problems: list[str] = []
    if not graph.has_node(INPUT) or not graph.has_node(OUTPUT):
        problems.append("the $input/$output frame is missing")
    for e in graph.edges():
        for end in (e.src, e.dst):
            if not graph.has_node(end):
                problems.append(f"edge {e.src}->{e.dst} names a missing node '{end}'")
        if problems:
            continue
        if e.kind != "route":
            if e.src_port not in graph.node(e.src).outputs:
                problems.append(f"edge {e.src}.{e.src_port}->{e.dst}: no such output")
            if e.dst_port not in graph.node(e.dst).inputs:
                problems.append(f"edge ->{e.dst}.{e.dst_port}: no such input")
        elif graph.node(e.src).route is None:
            problems.append(f"route edge from '{e.src}', which is not a router")
        if e.loop is not None and e.loop not in graph.loops:
            problems.append(f"edge {e.src}->{e.dst} belongs to unknown loop '{e.loop}'")
    for name, p in graph.params.items():
        if p.node is not None and not graph.has_node(p.node):
            problems.append(f"param '{name}' belongs to missing node '{p.node}'")
    for node in graph.nodes(pseudo=True):
        if node.name != node.name.strip() or not node.name:
            problems.append(f"bad node name {node.name!r}")
    if problems:
        raise FlowcError(
            "ir-verify-failed",
            f"the IR is invalid after pass '{after}': " + "; ".join(problems[:5]),
            hint="this is a bug in that pass; please report it with the spec",
        )
