"""What each node kind does when it fires: llm, retrieve, tool, subflow, and map over any of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import OutputParseError, RuntimeFlowError
from flowc.ir.graph import IRNode
from flowc.runtime.adapters import lora_for
from flowc.runtime.cache import forget
from flowc.runtime.config import RunConfig
from flowc.runtime.constraints import constraint_kind, reply_constraint, response_format
from flowc.runtime.lm import LMClient, LMRequest, Message
from flowc.runtime.outputs import OutputSpec, format_instructions, parse_outputs, resolve_format
from flowc.runtime.prompting import demo_messages, repair_message, user_message
from flowc.runtime.resources import RetrieverPool
from flowc.runtime.tools import ToolRegistry
from flowc.spec.models import LLMNode, MapNode, RetrieveNode, SubflowNode, ToolNode
from flowc.spec.types import ANY, STR, ListT, TypeExpr, non_optional

log = logging.getLogger(__name__)

SubflowRunner = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass
class NodeContext:
    compiled: CompiledPipeline
    lm: LMClient
    tools: ToolRegistry
    retrievers: RetrieverPool
    config: RunConfig
    subflow_executor: SubflowRunner
    map_item: Any
    # What this node output in its earlier firings of the run, port -> values oldest first
    # (a retrieve node with `skip_seen` leaves out the passages it already returned).
    earlier: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    # What an llm node's calls share whatever its inputs, worked out on its first firing and
    # kept by the executor for the life of the compiled pipeline (node name -> _LLMPlan).
    plans: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class _LLMPlan:
    """An llm node's fixed part: its model settings, reply format, constraint, instructions, the
    system and demo messages, and a request with everything but the messages."""

    model: str
    input_names: frozenset[str]  # the demos' inputs are laid out by these names
    out: OutputSpec
    instructions: str
    head: tuple[Message, ...]  # system prompt and demos
    template: LMRequest  # messages=() until a call fills them in


def _llm_plan(
    node: IRNode, spec: LLMNode, inputs: dict[str, Any], ports: dict[str, TypeExpr], ctx: NodeContext
) -> _LLMPlan:
    assert node.model is not None, "checked at compile time"
    decl = ctx.compiled.spec.models[node.model]
    kind = constraint_kind(decl.id, decl.constrained, decl.api_base)
    fmt = resolve_format(spec.format, ports)
    constraint: dict[str, Any] | None = None
    if kind == "grammar":
        constraint = reply_constraint(OutputSpec(ports, fmt))
    elif kind == "schema" and not (fmt == "text" and _free_text(ports)):
        # A hosted API holds the reply to a JSON schema: the node asks for JSON (unless its
        # format was chosen explicitly as something else, which the schema would contradict).
        fmt = "json" if spec.format in ("auto", "json") else fmt
        if fmt == "json":
            constraint = response_format(OutputSpec(ports, fmt), node.name)
    out = OutputSpec(ports, fmt)
    instructions = format_instructions(out)
    template = LMRequest(
        model=decl.id,
        messages=(),
        temperature=decl.temperature,
        max_tokens=decl.max_tokens,
        seed=decl.seed,
        api_base=decl.api_base,
        timeout_s=decl.timeout,
        constraint=constraint,
        adapter=lora_for(ctx.compiled, node.model),
        node=node.name,
    )
    head = demo_messages(
        system=spec.system, prompt=spec.prompt, demos=[dict(d) for d in spec.demos], inputs=inputs, outputs=out
    )
    return _LLMPlan(decl.id, frozenset(inputs), out, instructions, head, template)


def _free_text(ports: dict[str, TypeExpr]) -> bool:
    return len(ports) == 1 and non_optional(next(iter(ports.values()))) in (STR, ANY)


async def run_node(node: IRNode, inputs: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    """Run one firing of `node` on its input values; returns a value per output port."""
    spec = node.spec
    if isinstance(spec, MapNode):
        return await _run_map(node, spec, inputs, ctx)
    ports = {k: p.type for k, p in node.outputs.items()}
    return await _run_kind(node, spec, inputs, ports, ctx)


async def _run_map(node: IRNode, spec: MapNode, inputs: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    items = inputs.pop("over")
    if not isinstance(items, list):
        raise RuntimeFlowError(
            "input-type-error",
            f"map expected a list to iterate over, got {type(items).__name__}",
            node=node.name,
            hint="bind 'over' to a list-typed output",
        )
    if spec.max_items is not None and len(items) > spec.max_items:
        log.warning("map '%s': %d items, keeping the first %d (max_items)", node.name, len(items), spec.max_items)
        items = items[: spec.max_items]
    ports = {k: (p.type.item if isinstance(p.type, ListT) else p.type) for k, p in node.outputs.items()}
    sem = asyncio.Semaphore(ctx.config.map_concurrency)

    async def one(item: Any) -> dict[str, Any]:
        body_inputs = {k: (item if v is ctx.map_item else v) for k, v in inputs.items()}
        async with sem:
            return await _run_kind(node, spec.body, body_inputs, ports, ctx)

    tasks = [asyncio.ensure_future(one(x)) for x in items]
    try:
        results = await asyncio.gather(*tasks)
    except BaseException:
        # One item failed (or the step was cancelled): stop the others instead of letting them
        # call models in the background after the step has ended.
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return {port: [r.get(port) for r in results] for port in ports}


async def _run_kind(
    node: IRNode, spec: Any, inputs: dict[str, Any], ports: dict[str, TypeExpr], ctx: NodeContext
) -> dict[str, Any]:
    if isinstance(spec, LLMNode):
        return await _run_llm(node, spec, inputs, ports, ctx)
    if isinstance(spec, RetrieveNode):
        return await _run_retrieve(node, spec, inputs, ports, ctx)
    if isinstance(spec, ToolNode):
        return await _run_tool(node, spec, inputs, ports, ctx)
    if isinstance(spec, SubflowNode):
        return await ctx.subflow_executor(spec.flow, inputs)
    raise AssertionError(f"unknown node kind {node.kind}")


async def _run_llm(
    node: IRNode, spec: LLMNode, inputs: dict[str, Any], ports: dict[str, TypeExpr], ctx: NodeContext
) -> dict[str, Any]:
    plan: _LLMPlan | None = ctx.plans.get(node.name)  # a map's body is planned under the map's name
    if plan is None or plan.input_names != inputs.keys():
        plan = ctx.plans[node.name] = _llm_plan(node, spec, inputs, ports, ctx)
    out, model = plan.out, plan.model
    messages = (*plan.head, user_message(spec.prompt, inputs, plan.instructions))
    first_request = plan.template.model_copy(update={"messages": messages})
    resp = await ctx.lm.complete(first_request)
    try:
        return parse_outputs(resp.text, out, node=node.name, model=model)
    except OutputParseError as first:
        forget(ctx.lm, first_request)  # an unreadable reply must not answer the next run from the cache
        if not ctx.config.repair:
            raise
        # The model is told what was wrong with its reply, not flowc's node and model names.
        problem = _bare_message(first, node.name, model)
        retry = (*messages, Message(role="assistant", content=resp.text), repair_message(problem, out))
        repair_request = plan.template.model_copy(update={"messages": retry})
        resp2 = await ctx.lm.complete(repair_request)
        try:
            return parse_outputs(resp2.text, out, node=node.name, model=model)
        except OutputParseError as second:
            forget(ctx.lm, repair_request)
            raise OutputParseError(
                "output-parse-error",
                f"{_bare_message(second, node.name, model)} (also after one repair); reply was {resp2.text[:120]!r}",
                node=node.name,
                model=model,
                hint=second.hint,
            ) from None


def _bare_message(e: OutputParseError, node: str, model: str) -> str:
    """The error's message without the "node '...', model '...': " place that RuntimeFlowError adds
    (re-raising with the full message would name the place twice)."""
    message = e.diagnostic.message
    prefix = f"node '{node}', model '{model}': "
    return message[len(prefix) :] if message.startswith(prefix) else message


async def _run_retrieve(
    node: IRNode, spec: RetrieveNode, inputs: dict[str, Any], ports: Mapping[str, TypeExpr], ctx: NodeContext
) -> dict[str, Any]:
    corpus = ctx.compiled.spec.corpora[spec.corpus]
    path = ctx.compiled.spec.base_dir / corpus.path
    retriever = await ctx.retrievers.get(path, spec.method)
    seen = set(_doc_ids(ctx.earlier.get("docs", ()))) if spec.skip_seen else set()
    k = min(spec.k + len(seen), len(retriever.corpus)) if seen else spec.k  # enough left after skipping
    if "queries" in inputs and inputs["queries"] is not None:
        queries = [q for q in inputs["queries"] if isinstance(q, str) and q.strip()]
        if not queries:
            queries = [str(inputs.get("query") or "")]
        search_sub = getattr(retriever, "search_subqueries", None)
        if search_sub is not None and spec.filter_subqueries:
            # POQD's hallucination filter: sub-queries keep only words of the original query
            # (the query itself when nothing is left)
            original = str(inputs.get("query") or " ".join(queries))
            hits = await asyncio.to_thread(search_sub, queries, k, query=original)
        elif search_sub is not None:
            hits = await asyncio.to_thread(search_sub, queries, k)
        else:  # a single-vector retriever: pool the sub-queries into one query
            hits = await asyncio.to_thread(retriever.search, " ".join(queries), k)
    else:
        query = inputs.get("query")
        if not isinstance(query, str) or not query.strip():
            raise RuntimeFlowError(
                "input-type-error",
                f"retrieve got an empty query ({query!r})",
                node=node.name,
                hint="bind 'query' to a non-empty string",
            )
        hits = await asyncio.to_thread(retriever.search, query, k)
    docs = [h.to_dict() for h in hits if h.doc.id not in seen][: spec.k]
    # what was searched, for the ports lowering declared (`query` / `queries`, as bound)
    return {"docs": docs, **{p: inputs.get(p) for p in ports if p != "docs"}}


def _doc_ids(values: Any) -> Iterator[str]:
    """The ids of every passage in a retrieve node's earlier outputs (a map's come nested in lists)."""
    if isinstance(values, dict):
        if "id" in values:
            yield str(values["id"])
    elif isinstance(values, list | tuple):
        for v in values:
            yield from _doc_ids(v)


async def _run_tool(
    node: IRNode, spec: ToolNode, inputs: dict[str, Any], ports: dict[str, TypeExpr], ctx: NodeContext
) -> dict[str, Any]:
    result = await ctx.tools.call(spec.function, node.name, inputs)
    if len(ports) == 1 and not (isinstance(result, dict) and set(ports) <= set(result)):
        return {next(iter(ports)): result}
    if not isinstance(result, dict):
        raise RuntimeFlowError(
            "tool-failed",
            f"tool '{spec.function}' returned {type(result).__name__}; the node declares outputs {', '.join(ports)}",
            node=node.name,
            hint="return a dict with one key per output",
        )
    missing = [p for p in ports if p not in result]
    if missing:
        raise RuntimeFlowError(
            "tool-failed",
            f"tool '{spec.function}' returned no {', '.join(missing)}",
            node=node.name,
            hint="return a dict with one key per output",
        )
    return {p: result[p] for p in ports}
