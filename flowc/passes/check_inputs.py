"""check-inputs: each node gets the inputs its kind needs, and only inputs it has."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flowc.ir.graph import FlowGraph
from flowc.passes.base import Pass, PassContext
from flowc.spec.models import MapNode, RetrieveNode, SubflowNode


@dataclass(frozen=True)
class CheckInputsPass(Pass):
    name: ClassVar[str] = "check-inputs"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        spec = ctx.spec
        for name, node in spec.nodes.items():
            inner = node.body if isinstance(node, MapNode) else node
            base = ("nodes", name) if inner is node else ("nodes", name, "body")
            ir = graph.node(name)
            if isinstance(inner, RetrieveNode):
                self.retrieve(ctx, name, inner, base)
            elif isinstance(inner, SubflowNode) and ir.subflow is not None:
                for port in inner.inputs:
                    if port not in ir.inputs:
                        ctx.report(
                            "unknown-input-port",
                            f"flow '{inner.flow}' has no input '{port}'",
                            spec.key_span(*base, "inputs", port),
                            f"its inputs: {', '.join(p for p in ir.inputs if p != 'over') or 'none'}",
                        )
                for port, p in ir.inputs.items():
                    if port != "over" and p.required and port not in inner.inputs:
                        ctx.report(
                            "missing-input",
                            f"node '{name}' does not bind input '{port}' ({p.type}) of flow '{inner.flow}'",
                            spec.key_span("nodes", name),
                            f"add '{port} <- <source>'",
                        )
        return graph

    def retrieve(self, ctx: PassContext, name: str, node: RetrieveNode, base: tuple[str | int, ...]) -> None:
        spec = ctx.spec
        for port in node.inputs:
            if port not in ("query", "queries"):
                ctx.report(
                    "unknown-input-port",
                    f"a retrieve node has no input '{port}'",
                    spec.key_span(*base, "inputs", port),
                    "retrieve takes 'query' (str), or 'queries' (list[str]) with method maxsim",
                )
        has_q, has_qs = "query" in node.inputs, "queries" in node.inputs
        if node.filter_subqueries:
            self.filtered(ctx, name, node, base, has_q=has_q, has_qs=has_qs)
        elif not has_q and not has_qs:
            ctx.report(
                "missing-input",
                f"retrieve node '{name}' has no query",
                spec.key_span("nodes", name),
                "add 'query <- question' (or 'queries <- ...' with method maxsim)",
            )
        elif has_qs and node.method != "maxsim":
            ctx.report(
                "retrieve-method-mismatch",
                f"'{name}' gets several queries but method '{node.method}' scores one",
                spec.key_span(*base, "inputs", "queries"),
                "set 'method: maxsim', or bind 'query' instead",
            )
        elif has_q and has_qs:
            ctx.report(
                "retrieve-method-mismatch",
                f"'{name}' binds both 'query' and 'queries'",
                spec.key_span(*base, "inputs", "queries"),
                "keep one of them, or set 'filter_subqueries: true' to filter the sub-queries against 'query'",
            )

    def filtered(
        self, ctx: PassContext, name: str, node: RetrieveNode, base: tuple[str | int, ...], *, has_q: bool, has_qs: bool
    ) -> None:
        """`filter_subqueries` keeps the words of `query` in each of `queries`: maxsim with both bound."""
        spec = ctx.spec
        where = spec.key_span(*base, "filter_subqueries")
        if node.method != "maxsim":
            ctx.report(
                "retrieve-method-mismatch",
                f"'{name}' filters sub-queries, but method '{node.method}' searches one query",
                where,
                "set 'method: maxsim' (multi-vector retrieval over sub-queries)",
            )
        if not has_qs:
            ctx.report(
                "missing-input",
                f"retrieve node '{name}' filters sub-queries but has no 'queries'",
                where,
                "add 'queries <- <decomposer>.<output>'",
            )
        if not has_q:
            ctx.report(
                "missing-input",
                f"retrieve node '{name}' filters its sub-queries against the original query, which is not bound",
                where,
                "add 'query <- question' (the query the sub-queries were made from)",
            )
