"""check-types: every value that flows into a typed port fits its type."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from flowc.errors import ErrorCode
from flowc.ir.graph import INPUT, OUTPUT, FlowGraph
from flowc.passes.base import Pass, PassContext
from flowc.spec.exprs import Coalesce, Compare, Expr, Lit, Ref, refs
from flowc.spec.models import MapNode
from flowc.spec.types import (
    ANY,
    EnumT,
    ListT,
    OptionalT,
    Prim,
    RecordT,
    TypeExpr,
    is_assignable,
    named_refs,
    non_optional,
)


def binding_path(graph: FlowGraph, dst: str, port: str) -> tuple[str | int, ...]:
    if dst == OUTPUT:
        return ("outputs", port, "source")
    node = graph.spec.nodes[dst]
    if isinstance(node, MapNode):
        return ("nodes", dst, "over") if port == "over" else ("nodes", dst, "body", "inputs", port)
    return ("nodes", dst, "inputs", port)


def _lit_type(v: object) -> TypeExpr:
    if isinstance(v, bool):
        return Prim("bool")
    if isinstance(v, int):
        return Prim("int")
    if isinstance(v, float):
        return Prim("float")
    if isinstance(v, str):
        return Prim("str")
    return ANY


def value_fits(v: object, t: TypeExpr) -> bool:
    """Does the plain value `v` (a default from the spec) fit type `t`? Unknown names fit anything."""
    if t == ANY or v is None:
        return True
    if isinstance(t, OptionalT):
        return value_fits(v, t.inner)
    if isinstance(t, Prim):
        if isinstance(v, bool):
            return t.name == "bool"
        return {"str": isinstance(v, str), "int": isinstance(v, int), "float": isinstance(v, int | float)}.get(
            t.name, False
        )
    if isinstance(t, EnumT):
        return v in t.values
    if isinstance(t, ListT):
        return isinstance(v, list) and all(value_fits(x, t.item) for x in v)
    if isinstance(t, RecordT):
        if not isinstance(v, dict):
            return False
        return all(
            (k in v and value_fits(v[k], ft)) or (k not in v and isinstance(ft, OptionalT)) for k, ft in t.fields
        )
    return True  # a named type that did not resolve is reported as unknown-type


@dataclass(frozen=True)
class CheckTypesPass(Pass):
    """Edge types, literal bindings, map sources and loop conditions."""

    name: ClassVar[str] = "check-types"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        spec = ctx.spec
        for e in graph.edges():
            if e.kind == "route":
                continue
            src_t = graph.node(e.src).outputs[e.src_port].type
            if e.kind == "history":
                src_t = ListT(src_t)
            dst = graph.node(e.dst)
            port = dst.inputs.get(e.dst_port)
            if port is None:
                continue
            if e.dst_port == "over" and dst.kind == "map":
                if not isinstance(src_t, ListT) and src_t != ANY:
                    over = e.src_port if e.src == INPUT else f"{e.src}.{e.src_port}"
                    ctx.report(
                        "map-over-non-list",
                        f"map '{e.dst}' iterates over '{over}', a {src_t}, not a list",
                        e.span,
                        "bind 'over' to a list, e.g. an output of type list[str]",
                    )
                continue
            if named_refs(src_t) or named_refs(port.type):
                continue  # a type name that did not resolve: reported once, as unknown-type
            binding = dst.bindings.get(e.dst_port)
            if isinstance(binding, Coalesce) and e.option < len(binding.options) - 1 and isinstance(src_t, OptionalT):
                src_t = src_t.inner  # an absent (null) value falls through to the next alternative
            if not is_assignable(src_t, port.type):
                code: ErrorCode = "output-type-mismatch" if e.dst == OUTPUT else "edge-type-mismatch"
                src_name = e.src_port if e.src == INPUT else f"{e.src}.{e.src_port}"
                dst_name = f"output '{e.dst_port}'" if e.dst == OUTPUT else f"'{e.dst}.{e.dst_port}'"
                notes: tuple[str, ...] = ()
                if e.dst != OUTPUT:
                    fitting = [f"{k}: {p.type}" for k, p in dst.inputs.items() if is_assignable(src_t, p.type)]
                    notes = (f"inputs of '{e.dst}': " + ", ".join(f"{k}: {p.type}" for k, p in dst.inputs.items()),)
                    hint = (
                        f"did you mean '{e.dst}.{fitting[0].split(':')[0]}'?"
                        if fitting
                        else f"'{e.dst}.{e.dst_port}' takes {port.type}"
                    )
                else:
                    hint = f"declare the output as '{src_t}', or bind it to a value of type {port.type}"
                ctx.report(
                    code,
                    f"cannot connect '{src_name}' ({src_t}) to {dst_name} ({port.type})",
                    e.span,
                    hint,
                    notes=notes,
                )
        self.check_literals(graph, ctx)
        self.check_defaults(graph, ctx)
        for name, lp in spec.loops.items():
            if lp.while_ is not None:
                self.check_condition(graph, ctx, lp.while_, ("loops", name, "while"))
        return graph

    def check_literals(self, graph: FlowGraph, ctx: PassContext) -> None:
        for node in graph.nodes(pseudo=True):
            for port, expr in node.bindings.items():
                opts: tuple[Expr, ...] = expr.options if isinstance(expr, Coalesce) else (expr,)
                target = node.inputs.get(port)
                if target is None or target.type == ANY:
                    continue
                for o in opts:
                    if (
                        isinstance(o, Lit)
                        and o.value is not None
                        and not is_assignable(_lit_type(o.value), target.type)
                    ):
                        span = ctx.spec.span(*binding_path(graph, node.name, port), offset=o.offset, length=len(str(o)))
                        ctx.report(
                            "edge-type-mismatch",
                            f"the literal {o} is not a {target.type}, as '{node.name}.{port}' requires",
                            span,
                            f"write a {target.type} value",
                        )

    def check_defaults(self, graph: FlowGraph, ctx: PassContext) -> None:
        """An input's default must fit the input's type: it flows into the graph unchecked."""
        for name, decl in ctx.spec.inputs.items():
            port = graph.node(INPUT).outputs.get(name)
            if port is None or decl.default is None or value_fits(decl.default, port.type):
                continue
            shown = json.dumps(decl.default, ensure_ascii=False)
            ctx.report(
                "invalid-value",
                f"the default {shown} of input '{name}' does not fit its type {port.type}",
                ctx.spec.span("inputs", name, "default"),
                f"write a value of type {port.type}, or drop the default",
            )

    def ref_type(self, graph: FlowGraph, r: Ref) -> TypeExpr:
        if r.node is None:
            port = graph.node(INPUT).outputs.get(r.port)
        else:
            port = graph.node(r.node).outputs.get(r.port) if graph.has_node(r.node) else None
        return port.type if port else ANY

    def check_condition(self, graph: FlowGraph, ctx: PassContext, cond: Expr, path: tuple[str | int, ...]) -> None:
        stack = [cond]
        while stack:
            c = stack.pop()
            if isinstance(c, Compare):
                for a, b in ((c.left, c.right), (c.right, c.left)):
                    if isinstance(a, Ref) and isinstance(b, Lit):
                        t = self.ref_type(graph, a)
                        t = non_optional(t)
                        if isinstance(t, EnumT) and c.op in ("==", "!=") and b.value not in t.values:
                            ctx.report(
                                "condition-type-mismatch",
                                f"'{a}' is one of {', '.join(t.values)}; it is never {b}",
                                ctx.spec.span(*path, offset=b.offset, length=len(str(b))),
                                f"compare with one of: {', '.join(t.values)}",
                            )
                        if c.op in ("<", "<=", ">", ">=") and t not in (ANY, Prim("int"), Prim("float")):
                            ctx.report(
                                "condition-type-mismatch",
                                f"'{a}' is a {t}; '{c.op}' compares numbers",
                                ctx.spec.span(*path, offset=a.offset, length=len(str(a))),
                                "compare numbers, or use == / != / contains",
                            )
            elif hasattr(c, "items"):
                stack.extend(getattr(c, "items"))  # noqa: B009
            elif hasattr(c, "item"):
                stack.append(getattr(c, "item"))  # noqa: B009
        _ = refs  # conditions' names were resolved during lowering
