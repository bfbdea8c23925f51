"""Lowering: a validated spec → a FlowGraph, resolving every name.

Names that do not resolve are reported (with did-you-mean) and their edges left out, so the
passes after lowering still run on the rest and a spec's errors all come out in one run.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from flowc.errors import Diagnostic, ErrorCode
from flowc.ir.graph import INPUT, OUTPUT, Edge, FlowGraph, IRNode, LoopInfo, Param, Port, Route
from flowc.source import Span
from flowc.spec.exprs import Coalesce, Expr, History, Lit, Ref, refs
from flowc.spec.models import LLMNode, MapNode, Node, Pipeline, RetrieveNode, SubflowNode, ToolNode
from flowc.spec.types import ANY, BOOL, DOC, FLOAT, INT, STR, EnumT, ListT, Named, TypeExpr, named_refs, resolve

RETRIEVE_PORTS = {"query": STR, "queries": ListT(STR)}


def _close(word: str, choices: list[str] | set[str]) -> str | None:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _hint(word: str, choices: list[str] | set[str], what: str, none: str | None = None) -> str:
    """Did-you-mean, else the choices there are, else `none` (what to declare when there are none)."""
    close = _close(word, choices)
    if close:
        return close
    if choices:
        shown = sorted(choices)
        more = f" (and {len(shown) - 8} more)" if len(shown) > 8 else ""
        return f"{what}: {', '.join(shown[:8])}{more}"
    return none or f"no {what} are declared"


class _Lowerer:
    def __init__(self, spec: Pipeline, subflows: Mapping[str, FlowGraph]) -> None:
        self.spec = spec
        self.subflows = subflows
        self.g = FlowGraph(spec)
        self.diags: list[Diagnostic] = []

    def err(
        self,
        code: ErrorCode,
        msg: str,
        span: Span | None,
        hint: str | None = None,
        notes: tuple[str, ...] = (),
        severity: str = "error",
    ) -> None:
        self.diags.append(Diagnostic(code, msg, span, hint, severity, notes))  # type: ignore[arg-type]

    # -- types -------------------------------------------------------------------------------------

    def rtype(self, t: TypeExpr, *path: str | int) -> TypeExpr:
        for n in named_refs(t):
            if n.name != "Doc" and n.name not in self.spec.types:
                self.err(
                    "unknown-type",
                    f"unknown type '{n.name}'",
                    self.spec.span(*path, offset=n.offset, length=len(n.name)),
                    _hint(n.name, {*self.spec.types, "Doc", "str", "int", "float", "bool"}, "types"),
                )
        return resolve(t, dict(self.spec.types))

    # -- the whole graph -------------------------------------------------------------------------

    def run(self) -> FlowGraph:
        spec, g = self.spec, self.g
        for name, t in spec.types.items():
            g.types[name] = self.rtype(t, "types", name)
        g.add_node(
            IRNode(
                INPUT,
                INPUT,
                {},
                {
                    n: Port(n, self.rtype(i.type, "inputs", n, "type"), i.default is None)
                    for n, i in spec.inputs.items()
                },
                span=spec.span("pipeline"),
            )
        )
        for name, node in spec.nodes.items():
            if name in spec.inputs:
                self.err(
                    "name-conflict",
                    f"node '{name}' has the name of a pipeline input",
                    spec.key_span("nodes", name),
                    "rename the node or the input: a bare name in a binding means the input",
                )
            g.add_node(self.node_ir(name, node))
        for name, node in spec.nodes.items():
            self.bind_node(name, node)
        outs = {}
        for name, o in spec.outputs.items():
            t = self.rtype(o.type, "outputs", name, "type") if o.type is not None else ANY
            outs[name] = Port(name, t)
        g.add_node(
            IRNode(
                OUTPUT,
                OUTPUT,
                outs,
                {},
                bindings={n: o.source for n, o in spec.outputs.items()},
                span=spec.span("pipeline"),
            )
        )
        for name, o in spec.outputs.items():
            self.bind(OUTPUT, name, o.source, ("outputs", name, "source"), scope={})
        self.routes()
        self.loops()
        self.params()
        return g

    # -- nodes -------------------------------------------------------------------------------------

    def node_ir(self, name: str, node: Node) -> IRNode:
        p = ("nodes", name)
        span = self.spec.key_span(*p)
        if isinstance(node, MapNode):
            body = self.node_ir(name, node.body)
            map_outs = {k: Port(k, ListT(v.type)) for k, v in body.outputs.items()}
            map_ins = dict(body.inputs)
            map_ins["over"] = Port("over", ListT(ANY))
            return IRNode(
                name,
                "map",
                map_ins,
                map_outs,
                {**dict(node.body.inputs), "over": node.over},
                node,
                span,
                role=body.role,
                model=body.model,
                subflow=body.subflow,
            )
        ins: dict[str, Port]
        outs: dict[str, Port]
        route = None
        model = None
        sub = None
        if isinstance(node, LLMNode):
            ins = {k: Port(k, ANY) for k in node.inputs}
            outs = {}
            body_path = (
                ("nodes", name)
                if name in self.spec.nodes and self.spec.nodes[name] is node
                else ("nodes", name, "body")
            )
            for k, t in node.outputs.items():
                outs[k] = Port(k, self.rtype(t, *body_path, "outputs", k))
            if not outs:
                outs = {"text": Port("text", STR)}
            model = self.model_of(name, node, body_path)
            routes = [k for k, pt in outs.items() if isinstance(pt.type, EnumT) and pt.type.route]
            if len(routes) > 1:
                self.err(
                    "duplicate-route",
                    f"node '{name}' has {len(routes)} route outputs ({', '.join(routes)})",
                    self.spec.key_span(*body_path, "outputs", routes[1]),
                    "a router picks its next node with one output",
                )
            if routes:
                rt = outs[routes[0]].type
                assert isinstance(rt, EnumT)
                route = Route(routes[0], rt.values, node.fallback)
        elif isinstance(node, RetrieveNode):
            ins = {k: Port(k, t, False) for k, t in RETRIEVE_PORTS.items()}
            # Besides its passages, a retrieve node outputs what it searched for, under the name of
            # the input it read it from: `all search.query` lists the queries already run.
            outs = {"docs": Port("docs", ListT(DOC_T))}
            outs.update({k: Port(k, t) for k, t in RETRIEVE_PORTS.items() if k in node.inputs})
            if node.corpus not in self.spec.corpora:
                path = (
                    ("nodes", name, "corpus")
                    if self.spec.nodes.get(name) is node
                    else ("nodes", name, "body", "corpus")
                )
                self.err(
                    "unknown-corpus",
                    f"node '{name}' reads corpus '{node.corpus}', which is not declared",
                    self.spec.span(*path),
                    _hint(
                        node.corpus,
                        set(self.spec.corpora),
                        "declared corpora",
                        f'declare it: corpus {node.corpus} = "data/{node.corpus}.jsonl"',
                    ),
                )
        elif isinstance(node, ToolNode):
            ins = {k: Port(k, ANY) for k in node.inputs}
            outs = {k: Port(k, self.rtype(t, "nodes", name, "outputs", k)) for k, t in node.outputs.items()} or {
                "result": Port("result", ANY)
            }
        else:
            assert isinstance(node, SubflowNode)
            sub = self.subflows.get(node.flow)
            if sub is None:
                if node.flow not in self.spec.imports:
                    self.err(
                        "import-not-found",
                        f"node '{name}' uses flow '{node.flow}', which is not imported",
                        self.spec.span("nodes", name, "flow"),
                        _hint(node.flow, set(self.spec.imports), "imports")
                        if self.spec.imports
                        else f"add 'import \"{node.flow}.flow\" as {node.flow}' at the top",
                    )
                ins = {k: Port(k, ANY) for k in node.inputs}
                outs = {}
            else:
                ins = dict(sub.node(INPUT).outputs)
                outs = dict(sub.node(OUTPUT).inputs)
        return IRNode(
            name, node.kind, ins, outs, dict(node.inputs), node, span, route, getattr(node, "role", ""), model, sub
        )

    def model_of(self, name: str, node: LLMNode, path: tuple[str | int, ...]) -> str | None:
        models = self.spec.models
        if node.model is None:
            if len(models) == 1:
                return next(iter(models))
            self.err(
                "unknown-model",
                f"node '{name}' names no model and the pipeline declares {len(models) or 'no'} "
                f"model{'s' if len(models) != 1 else ''}",
                self.spec.key_span(*path),
                "add 'model: <name>' to the node" if models else 'declare one: model small = "local/smollm2"',
            )
            return None
        if node.model not in models:
            self.err(
                "unknown-model",
                f"node '{name}' uses model '{node.model}', which is not declared",
                self.spec.span(*path, "model"),
                _hint(node.model, set(models), "declared models", f'declare it: model {node.model} = "local/smollm2"'),
            )
            return None
        return node.model

    # -- bindings ----------------------------------------------------------------------------------

    def bind_node(self, name: str, node: Node) -> None:
        if isinstance(node, MapNode):
            scope: dict[str, TypeExpr] = {node.item: ANY}
            over_t = self.bind(name, "over", node.over, ("nodes", name, "over"), scope={})
            if isinstance(over_t, ListT):
                scope = {node.item: over_t.item}
            for port, b in node.body.inputs.items():
                self.bind(name, port, b, ("nodes", name, "body", "inputs", port), scope)
            return
        for port, b in node.inputs.items():
            self.bind(name, port, b, ("nodes", name, "inputs", port), scope={})

    def bind(
        self, dst: str, port: str, expr: Expr, path: tuple[str | int, ...], scope: dict[str, TypeExpr]
    ) -> TypeExpr:
        """Add the edges of one binding; returns the type of the value it delivers."""
        if isinstance(expr, Coalesce):
            types = [self.bind_one(dst, port, o, path, scope, i) for i, o in enumerate(expr.options)]
            return next((t for t in types if t != ANY), ANY)
        return self.bind_one(dst, port, expr, path, scope, 0)

    def bind_one(
        self, dst: str, port: str, e: Expr, path: tuple[str | int, ...], scope: dict[str, TypeExpr], option: int
    ) -> TypeExpr:
        spec, g = self.spec, self.g
        if isinstance(e, Lit):
            return _literal_type(e.value)
        kind = "history" if isinstance(e, History) else "data"
        ref = e.ref if isinstance(e, History) else e
        assert isinstance(ref, Ref)
        span = spec.span(*path, offset=ref.offset, length=len(str(ref)))
        if ref.node is None:
            if ref.port in scope:
                return scope[ref.port]
            if ref.port in spec.inputs:
                self.add_edge(Edge(INPUT, ref.port, dst, port, "data", option, None, span))
                return g.node(INPUT).outputs[ref.port].type
            if ref.port in spec.nodes:
                outs = list(g.node(ref.port).outputs)
                self.err(
                    "unknown-name",
                    f"'{ref.port}' is a node; a binding reads one of its outputs",
                    span,
                    f"write '{ref.port}.{outs[0]}'" if outs else None,
                )
            elif ref.port in {n.item for n in spec.nodes.values() if isinstance(n, MapNode)}:
                self.err(
                    "unknown-name",
                    f"'{ref.port}' is the element of a map; only the map's body can read it",
                    span,
                    "move this binding into the map's 'do:' body, or read the map's outputs (lists)",
                )
            else:
                # did-you-mean looks at nodes too (a node named without '.port'); the list shows inputs
                names = set(spec.inputs) | set(scope)
                self.err(
                    "unknown-name",
                    f"'{ref.port}' is not a pipeline input",
                    span,
                    _close(ref.port, names | set(spec.nodes)) or _hint(ref.port, names, "inputs"),
                )
            return ANY
        if ref.node not in spec.nodes:
            self.err(
                "unknown-node",
                f"no node named '{ref.node}'",
                spec.span(*path, offset=ref.offset, length=len(ref.node)),
                _hint(ref.node, set(spec.nodes), "nodes"),
            )
            return ANY
        src = g.node(ref.node)
        if ref.port not in src.outputs:
            if src.outputs or src.kind != "subflow":
                avail = ", ".join(f"{k}: {v.type}" for k, v in src.outputs.items())
                self.err(
                    "unknown-port",
                    f"node '{ref.node}' has no output '{ref.port}'",
                    spec.span(*path, offset=ref.offset + len(ref.node) + 1, length=len(ref.port)),
                    # the note lists the outputs; the hint only repeats them when there is no note
                    _close(ref.port, set(src.outputs))
                    or (f"read one of the outputs of '{ref.node}'" if avail else f"'{ref.node}' has no outputs"),
                    (f"outputs of '{ref.node}': {avail}",) if avail else (),
                )
            return ANY
        self.add_edge(Edge(ref.node, ref.port, dst, port, kind, option, None, span))  # type: ignore[arg-type]
        t = src.outputs[ref.port].type
        return ListT(t) if kind == "history" else t

    def add_edge(self, edge: Edge) -> None:
        """Add a data edge, unless its target port does not exist: a retrieve node or a subflow
        bound on a port it lacks is reported by check-inputs (unknown-input-port), and an edge
        into a missing port would break the IR's invariants (ir-verify-failed) instead."""
        if edge.dst_port in self.g.node(edge.dst).inputs:
            self.g.add_edge(edge)

    # -- routes, loops, params -------------------------------------------------------------------

    def routes(self) -> None:
        for n in list(self.g.nodes()):
            if n.route is None:
                continue
            path = ("nodes", n.name, "outputs", n.route.port)
            for choice in n.route.choices:
                if choice in self.spec.nodes:
                    self.g.add_edge(Edge(n.name, n.route.port, choice, "", "route", 0, None, self.spec.span(*path)))
                else:
                    self.err(
                        "route-unknown-target",
                        f"router '{n.name}' may choose '{choice}', which is not a node",
                        self.spec.span(*path),
                        _hint(choice, set(self.spec.nodes), "nodes"),
                    )

    def loops(self) -> None:
        for name, lp in self.spec.loops.items():
            p = ("loops", name)
            ok = True
            for key, node in (("from", lp.from_), ("to", lp.to)):
                if node not in self.spec.nodes:
                    self.err(
                        "unknown-node",
                        f"loop '{name}' names node '{node}', which does not exist",
                        self.spec.span(*p, key),
                        _hint(node, set(self.spec.nodes), "nodes"),
                    )
                    ok = False
            self.g.loops[name] = LoopInfo(name, lp.from_, lp.to, lp.max, lp.while_, self.spec.key_span(*p))
            flows = ok and any(e.dst == lp.to for e in self.g.out_edges(lp.from_))
            # (given the edge from -> to: `to` reaches `from` iff both are on one cycle)
            if flows and not self.g.same_cycle(lp.to, lp.from_):
                # `from -> to` is a forward edge (nothing leads from `to` back to `from`): tagging it
                # as a back edge would cut the pipeline's forward flow, and there is no cycle to bound
                self.err(
                    "invalid-loop",
                    f"loop '{name}': '{lp.from_}' -> '{lp.to}' is not a back edge; nothing leads from "
                    f"'{lp.to}' back to '{lp.from_}'",
                    self.spec.key_span(*p),
                    f"a loop goes from the node that closes a cycle to the node it returns to: "
                    f"did you mean 'loop {name}: {lp.to} -> {lp.from_}'?",
                )
            elif ok and self.g.mark_loop_edges(name, lp.from_, lp.to) == 0:
                self.err(
                    "invalid-loop",
                    f"loop '{name}': nothing flows from '{lp.from_}' to '{lp.to}'",
                    self.spec.key_span(*p),
                    f"bind an input of '{lp.to}' to an output of '{lp.from_}' "
                    f"(e.g. 'query <- {lp.from_}.query ?? question'), or route to it",
                )
            if lp.while_ is not None:
                for r in refs(lp.while_):
                    self.check_cond_ref(r, p)

    def check_cond_ref(self, r: Ref, p: tuple[str | int, ...]) -> None:
        span = self.spec.span(*p, "while", offset=r.offset, length=len(str(r)))
        if r.node is None:
            if r.port not in self.spec.inputs:
                self.err(
                    "unknown-name",
                    f"'{r.port}' is not a pipeline input",
                    span,
                    _hint(r.port, set(self.spec.inputs), "inputs"),
                )
        elif r.node not in self.spec.nodes:
            self.err("unknown-node", f"no node named '{r.node}'", span, _hint(r.node, set(self.spec.nodes), "nodes"))
        elif r.port not in self.g.node(r.node).outputs:
            self.err(
                "unknown-port",
                f"node '{r.node}' has no output '{r.port}'",
                span,
                _hint(r.port, set(self.g.node(r.node).outputs), f"outputs of '{r.node}'"),
            )

    def params(self) -> None:
        for name, node in self.spec.nodes.items():
            llm = node.body if isinstance(node, MapNode) else node
            if not isinstance(llm, LLMNode):
                continue
            base = ("nodes", name) if llm is node else ("nodes", name, "body")
            self.g.params[f"{name}.prompt"] = Param(
                f"{name}.prompt", "prompt", llm.prompt, llm.trainable, name, llm.role, self.spec.span(*base, "prompt")
            )
            if llm.system is not None:
                self.g.params[f"{name}.system"] = Param(
                    f"{name}.system",
                    "system",
                    llm.system,
                    llm.trainable,
                    name,
                    llm.role,
                    self.spec.span(*base, "system"),
                )
            self.g.params[f"{name}.demos"] = Param(
                f"{name}.demos",
                "demos",
                [dict(d) for d in llm.demos],
                llm.trainable,
                name,
                llm.role,
                self.spec.span(*base, "demos"),
            )
        for name, md in self.spec.models.items():
            if md.trainable or md.adapter:
                self.g.params[f"{name}.weights"] = Param(
                    f"{name}.weights", "weights", md.adapter, md.trainable, None, "", self.spec.key_span("models", name)
                )


DOC_T: TypeExpr = resolve(DOC, {})


def _literal_type(v: Any) -> TypeExpr:
    if isinstance(v, bool):
        return BOOL
    if isinstance(v, int):
        return INT
    if isinstance(v, float):
        return FLOAT
    if isinstance(v, str):
        return STR
    return ANY


def lower(spec: Pipeline, subflows: Mapping[str, FlowGraph] | None = None) -> tuple[FlowGraph, list[Diagnostic]]:
    """Build the FlowGraph of `spec`; `subflows` maps import aliases to their lowered graphs."""
    lo = _Lowerer(spec, subflows or {})
    g = lo.run()
    return g, lo.diags


__all__ = ["Named", "lower"]
