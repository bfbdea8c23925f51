"""check-reachability: every node can run, every node's work is used, every input is read.

A node runs when each of its inputs can get a value (some alternative of a coalesce suffices) and,
if routers may choose it, when one of those routers can run. Nodes outside that fixpoint can never
run: usually they wait on a cycle nothing enters, or on a node that itself never runs.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from flowc.ir.graph import INPUT, OUTPUT, FlowGraph, IRNode
from flowc.passes.base import Pass, PassContext
from flowc.spec.exprs import Coalesce, Expr, History, Lit, Ref, refs
from flowc.spec.models import MapNode, Pipeline


def can_run(graph: FlowGraph) -> set[str]:
    """The nodes that can run at least once (loop bounds and router answers aside)."""
    able: set[str] = {INPUT}
    route_sources: dict[str, set[str]] = {}
    for e in graph.edges():
        # A loop's route back edge re-triggers; it does not gate. Neither does a route back to an
        # ancestor that no loop declares: check-cycles reports that (unbounded-cycle), and calling
        # every node on the cycle unreachable as well would bury the one fix, declaring the loop.
        # (`graph.reaches` is a bounded search; a full reachable_from per route edge was quadratic.)
        if e.kind == "route" and e.loop is None and not (e.src == e.dst or graph.reaches(e.dst, {e.src})):
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
        named_nodes, named_inputs = _named(spec)
        for node in graph.nodes():
            if not graph.out_edges(node.name) and node.name not in named_nodes:
                ctx.report(
                    "dead-end-node",
                    f"nothing uses the outputs of node '{node.name}'",
                    node.span,
                    f"bind one of them to a pipeline output or another node, or remove '{node.name}'",
                    severity="warning",
                )
        for port in graph.node(INPUT).outputs:
            used = any(e.src_port == port for e in graph.out_edges(INPUT))
            if not used and port not in named_inputs:
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
    node = graph.node(name)
    scope = {node.spec.item} if isinstance(node.spec, MapNode) else set()
    # only bindings none of whose alternatives can get a value hold the node back
    stuck = {
        port
        for port, expr in node.bindings.items()
        if not any(_available(graph, o, able, scope) for o in (expr.options if isinstance(expr, Coalesce) else (expr,)))
    }
    waits = [e for e in ins if e.kind != "route" and e.src not in able and e.src != INPUT and e.dst_port in stuck]
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


def _named(spec: Pipeline) -> tuple[set[str], set[str]]:
    """The nodes and the pipeline inputs that some binding or loop condition names.

    This counts what the author meant to read, not only the edges lowering could build: a binding
    on a port its node lacks, a wrong output (`answer.text`), a bare node name, or a misspelt name
    (`questio`, `answr.answer`: the closest declared name) is an error reported elsewhere, and a
    warning that the node or input is unused would only repeat it in other words.
    """
    exprs: list[Expr] = [o.source for o in spec.outputs.values()]
    for node in spec.nodes.values():
        exprs.extend(node.inputs.values())
        if isinstance(node, MapNode):
            exprs.append(node.over)
            exprs.extend(node.body.inputs.values())
    exprs.extend(lp.while_ for lp in spec.loops.values() if lp.while_ is not None)
    items = {n.item for n in spec.nodes.values() if isinstance(n, MapNode)}
    nodes: set[str] = set()
    inputs: set[str] = set()
    for r in (r for e in exprs for r in refs(e)):
        if r.node is None and r.port in items and r.port not in spec.inputs:
            continue  # a map's element, not a pipeline input
        if r.node is not None:
            nodes.add(r.node if r.node in spec.nodes else _closest(r.node, spec.nodes))
        elif r.port in spec.inputs:
            inputs.add(r.port)
        elif r.port in spec.nodes:
            nodes.add(r.port)
        else:
            inputs.add(_closest(r.port, spec.inputs))
    return nodes, inputs


def _closest(word: str, names: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, sorted(names), n=1, cutoff=0.6)
    return close[0] if close else word
