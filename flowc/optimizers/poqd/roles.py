"""Which nodes of a pipeline play POQD's three parts (ALGORITHMS.md §3.1).

- the **decomposer**: an `llm` node whose list output feeds a `maxsim` retrieve node's `queries`;
  its prompt is the param POQD searches;
- the **retriever**: that retrieve node (frozen), with `filter_subqueries: true` and the original
  query bound as `query`;
- the **generator** (reader): the `llm` node that reads the retriever's `docs` and produces the
  output the metric scores; its model's weights are trained.

The decomposer and the generator may read pipeline inputs and literals besides the sub-queries and
the passages (POQD re-runs them outside the executor, one question at a time), nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.source import Span
from flowc.spec.exprs import Lit, Ref
from flowc.spec.models import LLMNode, RetrieveNode


@dataclass(frozen=True)
class Roles:
    """The node names (and ports) of POQD's parts in one pipeline."""

    decomposer: str
    subqueries_port: str
    retriever: str
    generator: str
    docs_port: str
    answer_port: str
    generator_model: str  # the declared model name (its param is `<name>.weights`)

    @property
    def prompt_param(self) -> str:
        return f"{self.decomposer}.prompt"

    @property
    def weights_param(self) -> str:
        return f"{self.generator_model}.weights"


def find_roles(compiled: CompiledPipeline, *, output: str, decomposer: str = "", generator: str = "") -> Roles:
    """Find the decomposer, retriever and generator of a pipeline whose output `output` is scored.

    Args:
        compiled: the pipeline.
        output: the pipeline output the metric scores (the generator's answer).
        decomposer, generator: node names, to choose when the pipeline has several candidates.

    Raises:
        FlowcError: `invalid-value` naming what is missing and how to fix the spec.
    """
    spec = compiled.spec
    graph = compiled.graph
    retrievers = []
    for name, node in spec.nodes.items():
        if not isinstance(node, RetrieveNode) or node.method != "maxsim":
            continue
        b = graph.node(name).bindings.get("queries")
        from_llm = isinstance(b, Ref) and b.node is not None and isinstance(spec.nodes.get(b.node), LLMNode)
        if from_llm and isinstance(b, Ref) and (not decomposer or b.node == decomposer):
            retrievers.append((name, str(b.node), b.port))
    if len(retrievers) != 1:
        found = ", ".join(f"{r} (queries from {d})" for r, d, _ in retrievers) or "none"
        raise FlowcError(
            "invalid-value",
            "POQD needs one maxsim retrieve node whose 'queries' come from an llm node (the decomposer); "
            f"found {found}",
            span=_near_a_retriever(compiled, [r for r, _, _ in retrievers]),
            hint="write 'node search: retrieve { method: maxsim  queries <- decompose.subqueries ... }'"
            + (", or choose one with --set decomposer_node=NODE" if retrievers else ""),
        )
    retriever, dec, sub_port = retrievers[0]
    rnode = spec.nodes[retriever]
    assert isinstance(rnode, RetrieveNode)
    if not rnode.filter_subqueries:
        raise FlowcError(
            "invalid-value",
            f"retrieve node '{retriever}' does not filter its sub-queries; POQD filters them (words not in the "
            "question are dropped), so the optimized pipeline must too",
            span=spec.key_span("nodes", retriever),
            hint=f"add 'filter_subqueries: true' and 'query <- question' to node '{retriever}'",
        )
    readers = []
    for name, node in spec.nodes.items():
        if not isinstance(node, LLMNode):
            continue
        for port, b in graph.node(name).bindings.items():
            if isinstance(b, Ref) and b.node == retriever and b.port == "docs" and (not generator or name == generator):
                readers.append((name, port))
    out = spec.outputs.get(output)
    src = graph.node("$output").bindings.get(output) if out is not None else None
    scored = [(n, p) for n, p in readers if isinstance(src, Ref) and src.node == n]
    if len(scored) != 1:
        raise FlowcError(
            "invalid-value",
            f"POQD needs the llm node that reads '{retriever}.docs' to produce the scored output '{output}'; "
            f"readers of the passages: {', '.join(n for n, _ in readers) or 'none'}",
            span=spec.key_span("outputs", output) if out is not None else spec.key_span("nodes", retriever),
            hint="bind the pipeline output the metric scores to the reader's answer (output answer <- read.answer)",
        )
    gen, docs_port = scored[0]
    assert isinstance(src, Ref)
    gnode = graph.node(gen)
    if len(gnode.outputs) != 1:
        raise FlowcError(
            "invalid-value",
            f"POQD scores the generator's one answer; node '{gen}' has outputs {', '.join(gnode.outputs)}",
            span=spec.key_span("nodes", gen),
            hint="give the reader node a single output",
        )
    for node_name, allowed in ((dec, set()), (gen, {docs_port}), (retriever, {"queries"})):
        for port, b in graph.node(node_name).bindings.items():
            if port in allowed or isinstance(b, Lit) or (isinstance(b, Ref) and b.node is None):
                continue
            raise FlowcError(
                "invalid-value",
                f"POQD runs node '{node_name}' on each training question alone, but its input '{port}' reads '{b}'",
                span=spec.key_span("nodes", node_name, "inputs", port),
                hint="the decomposer, the retriever's 'query' and the reader may read pipeline inputs and literals "
                "(besides the sub-queries and the passages)",
            )
    model = gnode.model
    assert model is not None
    return Roles(dec, sub_port, retriever, gen, docs_port, src.port, model)


def _near_a_retriever(compiled: CompiledPipeline, candidates: list[str]) -> Span | None:
    """Where to point when the retriever is not found: the second candidate, a retrieve node that
    is not maxsim (its method), or the pipeline's name."""
    spec = compiled.spec
    if len(candidates) > 1:
        return spec.key_span("nodes", candidates[1])
    others = [n for n, node in spec.nodes.items() if isinstance(node, RetrieveNode)]
    return spec.span("nodes", others[0], "method") if others else spec.span()


def bound_inputs(compiled: CompiledPipeline, node: str, example: Mapping[str, Any]) -> dict[str, Any]:
    """The values of `node`'s inputs bound to pipeline inputs or literals, for one example (a
    pipeline input the example lacks takes its declared default)."""
    out: dict[str, Any] = {}
    for port, b in compiled.graph.node(node).bindings.items():
        if isinstance(b, Lit):
            out[port] = b.value
        elif isinstance(b, Ref) and b.node is None:
            decl = compiled.spec.inputs.get(b.port)
            out[port] = example.get(b.port, decl.default if decl is not None else None)
    return out
