"""check-reachability: every node can run, every node's work is used, every input is read.

A node runs when each of its inputs can get a value (some alternative of a coalesce suffices) and,
if routers may choose it, when one of those routers can run. Nodes outside that fixpoint can never
run: usually they wait on a cycle nothing enters, or on a node that itself never runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flowc.ir.graph import INPUT, OUTPUT, FlowGraph, IRNode
from flowc.passes.base import Pass, PassContext
from flowc.spec.exprs import Coalesce, History, Lit, Ref
from flowc.spec.models import MapNode


def can_run(graph: FlowGraph) -> set[str]:
    """The nodes that can run at least once (loop bounds and router answers aside)."""
    able: set[str] = {INPUT}
    route_sources: dict[str, set[str]] = {}
    for e in graph.edges():
        if e.kind == "route" and e.loop is None:  # a loop's route back edge re-triggers; it does not gate
            route_sources.setdefault(e.dst, set()).add(e.src)
    changed = True
    while changed:
        changed = False
        for node in graph.nodes(pseudo=True):
            if node.name in able or node.name == OUTPUT:
                continue
            if _ready(graph, node, able) and (node.name not in route_sources or route_sources[node.name] & able):
                able.add(node.name)
                changed = True
    return able


def _ready(graph: FlowGraph, node: IRNode, able: set[str]) -> bool:
    scope = {node.spec.item} if isinstance(node.spec, MapNode) else set()
    for expr in node.bindings.values():
        opts = expr.options if isinstance(expr, Coalesce) else (expr,)
        if not any(_available(graph, o, able, scope) for o in opts):
            return False
    return True


def _available(graph: FlowGraph, e: object, able: set[str], scope: set[str]) -> bool:
    if isinstance(e, Lit):
        return True
    ref = e.ref if isinstance(e, History) else e
    if not isinstance(ref, Ref):
        return True
    if ref.node is None:
        return True  # pipeline inputs and map items always exist (unknown names are reported elsewhere)
    if not graph.has_node(ref.node):
        return True
    return ref.node in able


@dataclass(frozen=True)
class CheckReachabilityPass(Pass):
    name: ClassVar[str] = "check-reachability"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        spec = ctx.spec
        able = can_run(graph)
        for node in graph.nodes():
            if node.name not in able:
                why, hint = _why_unreachable(graph, node.name, able, next(iter(spec.inputs), None))
                ctx.report("unreachable-node", f"node '{node.name}' can never run: {why}", node.span, hint)
        if not spec.outputs:
            ctx.report(
                "no-outputs",
                f"pipeline '{spec.pipeline}' declares no outputs",
                spec.span("pipeline"),
                "add 'output answer: str <- <node>.<output>'",
            )
        read = _referenced_nodes(graph)
        for node in graph.nodes():
            # A node named by a binding that failed to resolve (a wrong port) is reported there;
            # warning that nothing reads it as well would only repeat that error.
            if not graph.out_edges(node.name) and node.name not in read:
                ctx.report(
                    "dead-end-node",
                    f"nothing uses the outputs of node '{node.name}'",
                    node.span,
                    f"bind one of them to a pipeline output or another node, or remove '{node.name}'",
                    severity="warning",
                )
        for port in graph.node(INPUT).outputs:
            used = any(e.src_port == port for e in graph.out_edges(INPUT))
            if not used and not _used_in_map_or_condition(spec, port):
                ctx.report(
                    "unused-pipeline-input",
                    f"pipeline input '{port}' is never read",
                    spec.key_span("inputs", port),
                    f"bind it (e.g. 'question <- {port}') or remove it",
                    severity="warning",
                )
        return graph


def _why_unreachable(graph: FlowGraph, name: str, able: set[str], an_input: str | None) -> tuple[str, str]:
    """Why `name` can never run, and a fix that names the actual edge."""
    ins = graph.in_edges(name)
    waits = [e for e in ins if e.kind != "route" and e.src not in able and e.src != INPUT]
    if waits:
        srcs = sorted({e.src for e in waits})
        e = waits[0]
        either = f"{e.src}.{e.src_port} ?? {an_input}" if an_input else f'{e.src}.{e.src_port} ?? ""'
        return (
            f"it waits on {', '.join(repr(w) for w in srcs)}, which never run{'s' if len(srcs) == 1 else ''}",
            f"give the cycle an entry, e.g. '{e.dst_port} <- {either}'",
        )
    routers = sorted({e.src for e in ins if e.kind == "route" and e.loop is None and e.src not in able})
    if routers:
        who = ", ".join(repr(r) for r in routers)
        return (
            f"only {who} may choose it, and {'it never runs' if len(routers) == 1 else 'they never run'}",
            "make the router runnable first (a router cannot gate itself)",
        )
    return "nothing starts it", "bind one of its inputs to a pipeline input or to a node that runs"


def _referenced_nodes(graph: FlowGraph) -> set[str]:
    """Every node that some binding or loop condition names, resolved or not."""
    from flowc.spec.exprs import refs

    out: set[str] = set()
    for node in graph.nodes(pseudo=True):
        for expr in node.bindings.values():
            out.update(r.node for r in refs(expr) if r.node)
    for lp in graph.loops.values():
        if lp.condition is not None:
            out.update(r.node for r in refs(lp.condition) if r.node)
    return out


def _used_in_map_or_condition(spec: object, port: str) -> bool:
    from flowc.spec.exprs import refs
    from flowc.spec.models import Pipeline

    assert isinstance(spec, Pipeline)
    # a binding that names the input on a port its node lacks is reported as unknown-input-port;
    # the input is still read there as far as the author is concerned
    for node in spec.nodes.values():
        exprs = [*node.inputs.values(), *(node.body.inputs.values() if isinstance(node, MapNode) else ())]
        if any(r.node is None and r.port == port for e in exprs for r in refs(e)):
            return True
    for lp in spec.loops.values():
        if lp.while_ is not None and any(r.node is None and r.port == port for r in refs(lp.while_)):
            return True
    return False
