"""What the generator sees: the reader node's chat messages for one question and one passage, and
the reply that states the gold answer — rendered exactly as the runtime renders that node, so the
probabilities POQD trains are those of the requests the pipeline sends (with one passage)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.optimizers.poqd.roles import Roles, bound_inputs
from flowc.runtime.corpus import Doc
from flowc.runtime.outputs import OutputSpec, render_reply, resolve_format
from flowc.runtime.prompting import build_messages
from flowc.spec.models import LLMNode

__all__ = ["answer_reply", "reader_messages"]


def _output_spec(compiled: CompiledPipeline, roles: Roles) -> tuple[LLMNode, OutputSpec]:
    node = compiled.spec.nodes[roles.generator]
    assert isinstance(node, LLMNode), "find_roles checked it"
    ports = {k: p.type for k, p in compiled.graph.node(roles.generator).outputs.items()}
    return node, OutputSpec(ports, resolve_format(node.format, ports))


def reader_messages(
    compiled: CompiledPipeline, roles: Roles, example: Mapping[str, Any], doc: Doc, score: float = 0.0
) -> list[dict[str, str]]:
    """The reader node's messages when the retriever returned `doc` alone for `example`."""
    node, out = _output_spec(compiled, roles)
    inputs = bound_inputs(compiled, roles.generator, example)
    inputs[roles.docs_port] = [{**doc.to_dict(), "score": score}]
    msgs = build_messages(
        system=node.system, prompt=node.prompt, demos=[dict(d) for d in node.demos], inputs=inputs, outputs=out
    )
    return [{"role": m.role, "content": m.content} for m in msgs]


def answer_reply(compiled: CompiledPipeline, roles: Roles, answer: Any) -> str:
    """The reply by which the reader states `answer`, in the node's reply format."""
    _, out = _output_spec(compiled, roles)
    return render_reply(out, {roles.answer_port: answer})
