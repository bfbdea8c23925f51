"""`--dry-run`: what a job would spend — calls, tokens and dollars — before it spends anything.

Forward passes are counted with the compiler's cost estimate (LM calls per input, best and worst
case); each optimizer adds its own calls per step. Tokens per call are estimated from the prompt
templates, the examples' text and max_tokens; prices come from litellm's bundled price map.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.spec.models import LLMNode, MapNode


@dataclass(frozen=True)
class Projection:
    calls_best: int
    calls_worst: int
    tokens: int
    usd: float
    breakdown: dict[str, int]

    def render(self) -> str:
        lines = [
            f"projected LM calls: {self.calls_best}–{self.calls_worst}",
            f"projected tokens:   ~{self.tokens:,} (at the worst case)",
            f"projected cost:     ~${self.usd:.4f}",
        ]
        lines += [f"  {k}: {v}" for k, v in self.breakdown.items()]
        return "\n".join(lines)


def forward_calls(compiled: CompiledPipeline) -> tuple[int, int]:
    cost = compiled.cost
    if cost is None:
        n = sum(1 for n in compiled.graph.nodes() if n.is_llm)
        return n, n
    return cost.best_calls, cost.worst_calls if cost.worst_calls is not None else cost.best_calls * 4


def tokens_per_call(compiled: CompiledPipeline, examples: Sequence[Mapping[str, Any]]) -> int:
    """A generous estimate: the longest prompt template, the average example, and max_tokens."""
    longest = 0
    max_out = 256
    for node in compiled.spec.nodes.values():
        llm = node.body if isinstance(node, MapNode) else node
        if isinstance(llm, LLMNode):
            longest = max(longest, len(llm.prompt) + len(llm.system or ""))
    for m in compiled.spec.models.values():
        if m.max_tokens:
            max_out = max(max_out if max_out != 256 else 0, m.max_tokens)
    avg_example = (sum(len(json.dumps(e, ensure_ascii=False)) for e in examples) / len(examples)) if examples else 200
    return int((longest + avg_example * 2) / 4) + max_out


def project(
    compiled: CompiledPipeline,
    *,
    pipeline_calls: tuple[int, int],
    optimizer_calls: int,
    examples: Sequence[Mapping[str, Any]],
    pipeline_model: str,
    optimizer_model: str,
    breakdown: dict[str, int],
) -> Projection:
    from flowc.runtime.client import token_prices

    per = tokens_per_call(compiled, examples)
    opt_per = per * 3  # feedback and rewrite prompts carry conversations and the variable
    p_in, p_out = token_prices(pipeline_model)
    o_in, o_out = token_prices(optimizer_model)
    worst_p, worst_o = pipeline_calls[1], optimizer_calls
    tokens = worst_p * per + worst_o * opt_per
    usd = worst_p * per * (p_in + p_out) / 2 + worst_o * opt_per * (o_in + o_out) / 2
    return Projection(pipeline_calls[0] + optimizer_calls, worst_p + worst_o, tokens, usd, breakdown)
