"""What each node kind does when it fires: llm, retrieve, tool, subflow, and map over any of them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import OutputParseError, RuntimeFlowError
from flowc.ir.graph import IRNode
from flowc.runtime.config import RunConfig
from flowc.runtime.constraints import reply_constraint, wants_constraint
from flowc.runtime.lm import LMClient, LMRequest, Message
from flowc.runtime.outputs import OutputSpec, parse_outputs, resolve_format
from flowc.runtime.prompting import build_messages, repair_message
from flowc.runtime.resources import RetrieverPool
from flowc.runtime.tools import ToolRegistry
from flowc.spec.models import LLMNode, MapNode, RetrieveNode, SubflowNode, ToolNode
from flowc.spec.types import ListT, TypeExpr

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
        return await _run_retrieve(node, spec, inputs, ctx)
    if isinstance(spec, ToolNode):
        return await _run_tool(node, spec, inputs, ports, ctx)
    if isinstance(spec, SubflowNode):
        return await ctx.subflow_executor(spec.flow, inputs)
    raise AssertionError(f"unknown node kind {node.kind}")


async def _run_llm(
    node: IRNode, spec: LLMNode, inputs: dict[str, Any], ports: dict[str, TypeExpr], ctx: NodeContext
) -> dict[str, Any]:
    assert node.model is not None, "checked at compile time"
    decl = ctx.compiled.spec.models[node.model]
    out = OutputSpec(ports, resolve_format(spec.format, ports))
    constraint = reply_constraint(out) if wants_constraint(decl.id, decl.constrained) else None
    messages = build_messages(
        system=spec.system, prompt=spec.prompt, demos=[dict(d) for d in spec.demos], inputs=inputs, outputs=out
    )

    def request(msgs: tuple[Message, ...]) -> LMRequest:
        return LMRequest(
            model=decl.id,
            messages=msgs,
            temperature=decl.temperature,
            max_tokens=decl.max_tokens,
            seed=decl.seed,
            api_base=decl.api_base,
            timeout_s=decl.timeout,
            constraint=constraint,
            node=node.name,
        )

    resp = await ctx.lm.complete(request(messages))
    try:
        return parse_outputs(resp.text, out, node=node.name, model=decl.id)
    except OutputParseError as first:
        if not ctx.config.repair:
            raise
        # The model is told what was wrong with its reply, not flowc's node and model names.
        problem = _bare_message(first, node.name, decl.id)
        retry = (*messages, Message(role="assistant", content=resp.text), repair_message(problem, out))
        resp2 = await ctx.lm.complete(request(retry))
        try:
            return parse_outputs(resp2.text, out, node=node.name, model=decl.id)
        except OutputParseError as second:
            raise OutputParseError(
                "output-parse-error",
                f"{_bare_message(second, node.name, decl.id)} (also after one repair); reply was {resp2.text[:120]!r}",
                node=node.name,
                model=decl.id,
                hint=second.hint,
            ) from None


def _bare_message(e: OutputParseError, node: str, model: str) -> str:
    """The error's message without the "node '...', model '...': " place that RuntimeFlowError adds
    (re-raising with the full message would name the place twice)."""
    message = e.diagnostic.message
    prefix = f"node '{node}', model '{model}': "
    return message[len(prefix) :] if message.startswith(prefix) else message


async def _run_retrieve(node: IRNode, spec: RetrieveNode, inputs: dict[str, Any], ctx: NodeContext) -> dict[str, Any]:
    corpus = ctx.compiled.spec.corpora[spec.corpus]
    path = ctx.compiled.spec.base_dir / corpus.path
    retriever = await ctx.retrievers.get(path, spec.method)
    if "queries" in inputs and inputs["queries"] is not None:
        queries = [q for q in inputs["queries"] if isinstance(q, str) and q.strip()]
        if not queries:
            queries = [str(inputs.get("query") or "")]
        search_sub = getattr(retriever, "search_subqueries", None)
        if search_sub is not None and spec.filter_subqueries:
            # POQD's hallucination filter: sub-queries keep only words of the original query
            # (the query itself when nothing is left)
            original = str(inputs.get("query") or " ".join(queries))
            hits = await asyncio.to_thread(search_sub, queries, spec.k, query=original)
        elif search_sub is not None:
            hits = await asyncio.to_thread(search_sub, queries, spec.k)
        else:  # a single-vector retriever: pool the sub-queries into one query
            hits = await asyncio.to_thread(retriever.search, " ".join(queries), spec.k)
    else:
        query = inputs.get("query")
        if not isinstance(query, str) or not query.strip():
            raise RuntimeFlowError(
                "input-type-error",
                f"retrieve got an empty query ({query!r})",
                node=node.name,
                hint="bind 'query' to a non-empty string",
            )
        hits = await asyncio.to_thread(retriever.search, query, spec.k)
    return {"docs": [h.to_dict() for h in hits]}


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
