"""check-declarations: metrics, test cases and demos name things the pipeline has."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from flowc.ir.graph import INPUT, FlowGraph
from flowc.passes.base import Pass, PassContext
from flowc.passes.check_types import value_fits
from flowc.spec.build import did_you_mean
from flowc.spec.models import METRIC_NAMES, LLMNode, MapNode


@dataclass(frozen=True)
class CheckDeclarationsPass(Pass):
    name: ClassVar[str] = "check-declarations"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        spec = ctx.spec
        outputs, inputs = set(spec.outputs), set(spec.inputs)
        for name, md in spec.metrics.items():
            p = ("metrics", name)
            if md.fn not in METRIC_NAMES:
                ctx.report(
                    "unknown-metric",
                    f"metric '{name}' uses '{md.fn}', which flowc does not know",
                    spec.span(*p, "fn"),
                    did_you_mean(md.fn, METRIC_NAMES) or f"known: {', '.join(METRIC_NAMES)}",
                )
            _check_judge(ctx, name, md.fn, md.model, set(spec.models))
            if md.output not in outputs:
                ctx.report(
                    "unknown-name",
                    f"metric '{name}' scores output '{md.output}', which the pipeline does not have",
                    spec.span(*p, "output"),
                    did_you_mean(md.output, outputs) or _listing("outputs", outputs),
                )
        for name, t in spec.tests.items():
            p = ("tests", name)
            for k, v in t.inputs.items():
                if k not in inputs:
                    ctx.report(
                        "test-unknown-name",
                        f"test '{name}' sets '{k}', which is not a pipeline input",
                        spec.key_span(*p, "inputs", k),
                        did_you_mean(k, inputs) or _listing("inputs", inputs),
                    )
                    continue
                port = graph.node(INPUT).outputs.get(k)
                if port is not None and not value_fits(v, port.type):
                    ctx.report(
                        "invalid-value",
                        f"test '{name}' sets input '{k}' to {json.dumps(v, ensure_ascii=False)}, "
                        f"which does not fit its type {port.type}",
                        spec.span(*p, "inputs", k),
                        f"write a value of type {port.type}",
                    )
            for i, ex in enumerate(t.expect):
                if ex.output not in outputs:
                    ctx.report(
                        "test-unknown-name",
                        f"test '{name}' expects '{ex.output}', which is not a pipeline output",
                        spec.span(*p, "expect", i, "output"),
                        did_you_mean(ex.output, outputs) or _listing("outputs", outputs),
                    )
            missing = [k for k, i in spec.inputs.items() if i.default is None and k not in t.inputs]
            if missing:
                ctx.report(
                    "missing-input",
                    f"test '{name}' does not set required input{'s' if len(missing) > 1 else ''} {', '.join(missing)}",
                    spec.key_span(*p),
                    f"add '{missing[0]} = ...' to the test",
                )
        for name, node in spec.nodes.items():
            llm = node.body if isinstance(node, MapNode) else node
            if not isinstance(llm, LLMNode):
                continue
            base = ("nodes", name) if llm is node else ("nodes", name, "body")
            fields = set(llm.inputs) | set(graph.node(name).outputs if llm is node else llm.outputs or {"text"})
            for i, demo in enumerate(llm.demos):
                for k in demo:
                    if k not in fields:
                        ctx.report(
                            "demo-unknown-field",
                            f"demo {i + 1} of '{name}' sets '{k}', which is neither an input nor an output of the node",
                            spec.key_span(*base, "demos", i, k),
                            did_you_mean(k, fields) or f"fields: {', '.join(sorted(fields))}",
                        )
        return graph


def _check_judge(ctx: PassContext, name: str, fn: str, model: str | None, models: set[str]) -> None:
    """An llm_judge metric names its judge, a declared model; no other metric takes a model."""
    p = ("metrics", name)
    if fn == "llm_judge" and model is None:
        ctx.report(
            "missing-field",
            f"metric '{name}' uses llm_judge, which needs a judge model",
            ctx.spec.span(*p, "fn"),
            f"add 'model = NAME' naming a declared model ({', '.join(sorted(models)) or 'declare one'})",
        )
    elif fn == "llm_judge" and model not in models:
        ctx.report(
            "unknown-model",
            f"metric '{name}' is judged by model '{model}', which the pipeline does not declare",
            ctx.spec.span(*p, "model"),
            did_you_mean(model or "", models) or _listing("models", models),
        )
    elif fn != "llm_judge" and model is not None:
        ctx.report(
            "invalid-value",
            f"metric '{name}' uses {fn}, which takes no model (only llm_judge does)",
            ctx.spec.span(*p, "model"),
            "remove 'model = ...'",
        )


def _listing(what: str, names: set[str]) -> str:
    """`inputs: a, b`, or a plain statement when there are none (not an empty list)."""
    return f"{what}: {', '.join(sorted(names))}" if names else f"the pipeline declares no {what}"
