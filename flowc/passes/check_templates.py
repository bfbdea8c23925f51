"""check-templates: every placeholder of a prompt is an input of its node, and every input is used."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from flowc.ir.graph import FlowGraph
from flowc.passes.base import Pass, PassContext
from flowc.passes.port_types import delivered_type
from flowc.spec.build import did_you_mean
from flowc.spec.models import LLMNode, MapNode
from flowc.spec.template import Placeholder, TemplateError, placeholders
from flowc.spec.types import ANY, Named, RecordT, non_optional


@dataclass(frozen=True)
class CheckTemplatesPass(Pass):
    name: ClassVar[str] = "check-templates"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        spec = ctx.spec
        for name, node in spec.nodes.items():
            llm = node.body if isinstance(node, MapNode) else node
            if not isinstance(llm, LLMNode):
                continue
            base = ("nodes", name) if llm is node else ("nodes", name, "body")
            used: set[str] = set()
            broken = False  # a malformed template hides its placeholders: do not call inputs unused
            for field in ("system", "prompt"):
                text = getattr(llm, field)
                if text is None:
                    continue
                try:
                    phs = placeholders(text)
                except TemplateError as e:
                    ctx.report(
                        "template-syntax",
                        f"node '{name}': {e}",
                        spec.span_in(*base, field, offset=e.offset, length=2, value=text),
                        "placeholders look like {{name}}",
                    )
                    broken = True
                    continue
                for ph in phs:
                    used.add(ph.name)
                    if ph.name in llm.inputs and ph.field is not None:
                        self.check_field(ctx, graph, name, field, base, text, ph)
                    if ph.name not in llm.inputs:
                        span = spec.span_in(*base, field, offset=ph.offset, length=ph.length, value=text)
                        bound = ", ".join(llm.inputs) or "none"
                        which = "system prompt" if field == "system" else "prompt"
                        ctx.report(
                            "template-unbound-var",
                            f"the {which} of '{name}' uses {{{{{ph.name}}}}}, which is not an input of the node",
                            span,
                            f"bind it: '{ph.name} <- <source>'",
                            notes=(f"inputs of '{name}': {bound}",),
                        )
            for port in llm.inputs:
                if port not in used and not broken:
                    ctx.report(
                        "template-unused-input",
                        f"input '{port}' of '{name}' is not used in its prompt",
                        spec.key_span(*base, "inputs", port),
                        f"add {{{{{port}}}}} to the prompt, or remove the binding",
                        severity="warning",
                    )
        return graph

    def check_field(
        self,
        ctx: PassContext,
        graph: FlowGraph,
        name: str,
        field: str,
        base: tuple[str, ...],
        text: str,
        ph: Placeholder,
    ) -> None:
        """`{{x.f}}` reads field `f` of a record: x must be a record that has it (when x's type is known)."""
        t = non_optional(delivered_type(graph, name, ph.name)) if graph.has_node(name) else ANY
        if t == ANY or isinstance(t, Named):
            return
        span = ctx.spec.span_in(*base, field, offset=ph.offset, length=ph.length, value=text)
        if isinstance(t, RecordT):
            if t.field(str(ph.field)) is None:
                fields = [k for k, _ in t.fields]
                ctx.report(
                    "template-unknown-field",
                    f"{{{{{ph.name}.{ph.field}}}}}: '{ph.name}' of '{name}' is a {t}, which has no field '{ph.field}'",
                    span,
                    did_you_mean(str(ph.field), fields) or f"fields: {', '.join(fields)}",
                )
            return
        ctx.report(
            "template-unknown-field",
            f"{{{{{ph.name}.{ph.field}}}}}: '{ph.name}' of '{name}' is a {t}, which has no fields",
            span,
            f"write {{{{{ph.name}}}}}; only record values (types like {{title: str, text: str}}) have fields",
        )
