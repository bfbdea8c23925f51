"""JADE's rewards, read from a rollout's trace (ALGORITHMS.md §4.3).

Every call of the trainable backbone in an episode becomes a `Transition` whose reward is

    outcome + local format penalty − efficiency cost

- **outcome**: the pipeline metric on the episode's final output (token F1, or EM for yes/no
  answers, as in the release), shared by every role of the episode;
- **local format penalty** (`format_penalty`, −2.0 as in the release), per call, when the trace
  shows that the call broke its role's output contract:
  - `unparseable`: the runtime could not read the reply into the node's outputs (a repair request
    followed it, or the step failed on it);
  - `untagged`: a `format: tagged` node's reply lacks one of its tags (JADE parses tags strictly;
    flowc's reader is lenient and takes a lone untagged answer — the lenient reading is the fallback);
  - `fallback`: a router's reply named no valid choice, so the router took its fallback (JADE's
    invalid workflow → `QDS`);
  - `empty`: nothing but whitespace;
  - the role contracts of the release's roles, matched by the node's declared `role`:
    `query rewriter` (the query repeats the question, or is over `max_query_words`),
    `query decomposer` (no sub-question, more than `max_subquestions`, duplicates, or one that
    repeats the question), `document selector` (an id outside the documents it was shown),
    `answer generator` / `answer summarizer` (over `max_answer_words`; "I don't know" with no
    documents to answer from, AG only);
- **efficiency cost**: `call_cost · min(calls − 1, cap)/cap + retrieval_cost · min(retrievals, cap)/cap`
  (both 0 by default, as in the release; JADE counts sub-question turns where flowc counts the
  episode's calls of the trainable model).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import OutputParseError
from flowc.optimizers.jade.buffer import Transition
from flowc.runtime.metrics import normalize_answer
from flowc.runtime.outputs import MISSING, OutputSpec, parse_outputs, resolve_format
from flowc.runtime.trace import LMCallRecord, RunResult, StepRecord
from flowc.spec.models import LLMNode, MapNode
from flowc.spec.types import EnumT, ListT, TypeExpr, non_optional


@dataclass(frozen=True)
class RewardConfig:
    """The reward's knobs (the release's values by default)."""

    format_penalty: float = -2.0
    call_cost: float = 0.0
    retrieval_cost: float = 0.0
    cost_cap: int = 3
    max_answer_words: int = 40
    max_query_words: int = 100
    max_subquestions: int = 7


def episode_transitions(
    run: RunResult,
    compiled: CompiledPipeline,
    trainable: Collection[str],
    outcome: float,
    config: RewardConfig,
    *,
    episode: int,
    question: int,
) -> list[Transition]:
    """The transitions of one rollout: every call to a model in `trainable` (model ids), in order,
    with its penalty, the episode's `outcome` and cost."""
    calls = [(step, c) for step in run.steps for c in step.lm_calls if c.model in trainable and c.response is not None]
    retrievals = sum(
        1 for s in run.steps if s.kind == "retrieve" or (s.kind == "map" and _body_kind(compiled, s) == "retrieve")
    )
    cap = max(config.cost_cap, 1)
    cost = (
        config.call_cost * min(max(len(calls) - 1, 0), cap) / cap + config.retrieval_cost * min(retrievals, cap) / cap
    )
    out = []
    for i, (step, call) in enumerate(calls):
        reasons = call_violations(step, call, compiled, config)
        node, role = _node_and_role(compiled, step, call)
        out.append(
            Transition(
                episode=episode,
                question=question,
                node=node,
                role=role,
                call=i,
                messages=tuple({"role": m["role"], "content": m["content"]} for m in call.request.get("messages", [])),
                completion=call.response or "",
                finished=_finished(call),
                penalty=config.format_penalty if reasons else 0.0,
                reasons=tuple(reasons),
                outcome=outcome,
                cost=cost,
            )
        )
    return out


def call_violations(
    step: StepRecord, call: LMCallRecord, compiled: CompiledPipeline, config: RewardConfig
) -> list[str]:
    """Why a call broke its role's output contract (empty when it did not)."""
    reply = call.response or ""
    if not reply.strip():
        return ["empty"]
    reasons: list[str] = []
    if _repaired(step, call) or (step.status == "error" and call is step.lm_calls[-1]):
        reasons.append("unparseable")
    spec = _output_spec(compiled, step, call)
    values: dict[str, Any] | None = None
    if spec is not None:
        try:
            values = parse_outputs(reply, spec, node=step.node)
        except OutputParseError:
            if "unparseable" not in reasons:
                reasons.append("unparseable")
        if spec.format == "tagged" and values is not None and _untagged(reply, spec):
            reasons.append("untagged")
        if values is not None and any(v is MISSING for v in values.values()):
            reasons.append("fallback")
    if step.note and "fallback" in step.note and call is step.lm_calls[-1] and "fallback" not in reasons:
        reasons.append("fallback")
    if values is not None:
        node_role = _node_and_role(compiled, step, call)[1]
        reasons += role_violations(node_role, step.inputs, values, reply, config)
    return reasons


def role_violations(
    role: str, inputs: Mapping[str, Any], values: Mapping[str, Any], reply: str, config: RewardConfig
) -> list[str]:
    """The release's per-role validity rules (§4.2), for the roles it has, by declared role name."""
    role = role.strip().lower()
    question = normalize_answer(inputs.get("question") or "")
    texts = [v for v in values.values() if isinstance(v, str)]
    lists = [v for v in values.values() if isinstance(v, list)]
    if role == "query rewriter" and texts:
        query = texts[0]
        if normalize_answer(query) == question:
            return ["query repeats the question"]
        if len(query.split()) > config.max_query_words:
            return ["query too long"]
    elif role == "query decomposer" and lists:
        items = [normalize_answer(x) for x in lists[0]]
        if not items or len(items) > config.max_subquestions:
            return ["sub-question count"]
        if len(set(items)) < len(items):
            return ["duplicate sub-questions"]
        if question and question in items:
            return ["sub-question repeats the question"]
    elif role == "document selector" and lists:
        shown = inputs.get("docs")
        n = len(shown) if isinstance(shown, list) else 0
        if any(not isinstance(i, int) or not 1 <= i <= n for i in lists[0]):
            return ["id outside the documents"]
    elif role in ("answer generator", "answer summarizer") and texts:
        answer = texts[0]
        if len(answer.split()) > config.max_answer_words:
            return ["answer too long"]
        no_docs = not inputs.get("docs")
        said = normalize_answer(answer)
        if role == "answer generator" and no_docs and ("dont know" in said or "do not know" in said):
            return ["refused without documents"]
    return []


# -- reading the trace --------------------------------------------------------------------------------


def _repaired(step: StepRecord, call: LMCallRecord) -> bool:
    """A later call of the step repeats this call's messages and reply: the runtime asked for a
    repair, so this reply could not be read."""
    msgs = call.request.get("messages", [])
    asked = [*msgs, {"role": "assistant", "content": call.response}]
    for other in step.lm_calls:
        later = other.request.get("messages", [])
        if other is not call and len(later) > len(asked) and later[: len(asked)] == asked:
            return True
    return False


def _llm_spec(compiled: CompiledPipeline, step: StepRecord) -> tuple[LLMNode, dict[str, TypeExpr]] | None:
    if not compiled.graph.has_node(step.node):
        return None
    node = compiled.graph.node(step.node)
    if isinstance(node.spec, LLMNode):
        return node.spec, {k: p.type for k, p in node.outputs.items()}
    if isinstance(node.spec, MapNode) and isinstance(node.spec.body, LLMNode):
        items = {k: (p.type.item if isinstance(p.type, ListT) else p.type) for k, p in node.outputs.items()}
        return node.spec.body, items
    return None


def _output_spec(compiled: CompiledPipeline, step: StepRecord, call: LMCallRecord) -> OutputSpec | None:
    """The outputs the call's node reads its reply into (None for calls made inside a subflow)."""
    found = _llm_spec(compiled, step)
    if found is None or call.node != step.node:
        return None
    spec, ports = found
    return OutputSpec(ports, resolve_format(spec.format, ports))


def _untagged(reply: str, spec: OutputSpec) -> bool:
    """A required port's `<name>…</name>` is absent (the reader then took the whole reply)."""
    low = reply.lower()
    for name, t in spec.ports.items():
        required = non_optional(t) is t
        if required and not isinstance(t, EnumT) and (f"<{name}>" not in low or f"</{name}>" not in low):
            return True
        if isinstance(t, EnumT) and f"<{name}>" not in low:
            return True
    return False


def _node_and_role(compiled: CompiledPipeline, step: StepRecord, call: LMCallRecord) -> tuple[str, str]:
    name = call.node or step.node
    if name == step.node and compiled.graph.has_node(step.node):
        node = compiled.graph.node(step.node)
        role = node.role
        if isinstance(node.spec, MapNode) and isinstance(node.spec.body, LLMNode):
            role = node.spec.body.role or role
        return name, role or name
    return name, name


def _body_kind(compiled: CompiledPipeline, step: StepRecord) -> str | None:
    if not compiled.graph.has_node(step.node):
        return None
    spec = compiled.graph.node(step.node).spec
    return getattr(spec.body, "kind", None) if isinstance(spec, MapNode) else None


def _finished(call: LMCallRecord) -> bool:
    """The reply ended on its own (not cut at max_tokens): what the trace can tell."""
    limit = call.request.get("max_tokens")
    return not (isinstance(limit, int) and call.completion_tokens >= limit)


__all__ = ("RewardConfig", "call_violations", "episode_transitions", "role_violations")
