"""`llm_judge`: a metric scored by a model the spec declares.

    model judge = "openai/gpt-4o-mini"
    metric graded: llm_judge(output = answer, target = answer, model = judge)

The judge sees the example's inputs, the reference (the dataset's target field) and the pipeline's
output, and answers with a grade from 0 to 10 in `<score>` tags; the metric is the grade / 10. The
judge is asked at temperature 0 (so its answers are cached like any deterministic call) with the
declared model's other settings. A reply without a grade is an error of that example (code
`output-parse-error`), never a silent 0: `--resume` asks again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowc.errors import FlowcError, RuntimeFlowError
from flowc.runtime.lm import LMClient, LMRequest, chat
from flowc.spec.models import ModelDecl

SYSTEM = "You grade answers. You are strict, fair and brief."
PROMPT = """Grade the candidate answer against the reference answer.

Task inputs:
{inputs}

Reference answer:
{reference}

Candidate answer:
{candidate}

Is the candidate correct and consistent with the reference? Wording may differ; facts may not.
Reply with a grade from 0 (wrong) to 10 (fully correct) as <score>N</score>, then one short reason."""

_TAGGED = re.compile(r"<score>\s*(\d+(?:\.\d+)?)\s*</score>", re.I)
_LEADING = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\b")


@dataclass(frozen=True)
class Verdict:
    score: float  # in [0, 1]
    reply: str
    tokens: int
    cost_usd: float
    cached: bool


@dataclass(frozen=True)
class LLMJudge:
    """Scores predictions with the model declared as `decl`, through `lm` (the run's client)."""

    metric: str
    model_name: str
    decl: ModelDecl
    lm: LMClient

    async def score(self, prediction: Any, reference: Any, inputs: Mapping[str, Any]) -> Verdict:
        request = LMRequest(
            model=self.decl.id,
            messages=chat(
                SYSTEM,
                PROMPT.format(inputs=_show(inputs), reference=_show(reference), candidate=_show(prediction)),
            ),
            temperature=0.0,
            max_tokens=self.decl.max_tokens or 128,
            seed=self.decl.seed,
            api_base=self.decl.api_base,
            timeout_s=self.decl.timeout,
            node=f"llm_judge:{self.metric}",
        )
        resp = await self.lm.complete(request)
        grade = parse_grade(resp.text)
        if grade is None:
            raise RuntimeFlowError(
                "output-parse-error",
                f"llm_judge '{self.metric}': the judge's reply has no grade from 0 to 10: {resp.text[:120]!r}",
                model=self.decl.id,
                hint=f"use a stronger judge model than '{self.model_name}', or raise its max_tokens",
            )
        return Verdict(grade, resp.text, resp.total_tokens, resp.cost_usd, resp.cached)


def parse_grade(text: str) -> float | None:
    """The grade in a judge's reply, scaled to [0, 1]: `<score>N</score>`, else a leading number."""
    m = _TAGGED.search(text) or _LEADING.match(text)
    if m is None:
        return None
    value = float(m.group(1))
    if value > 10:
        return None
    return value / 10.0


def _show(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "\n".join(f"{k}: {_show(v)}" for k, v in value.items())
    return json.dumps(value, ensure_ascii=False, default=repr)


def judge_for(metric: str, model_name: str | None, models: Mapping[str, ModelDecl], lm: LMClient) -> LLMJudge:
    """The judge of an `llm_judge` metric, from the model it names (check-declarations has made
    sure of that for specs; this repeats it for artifacts and the Python API)."""
    if not model_name or model_name not in models:
        raise FlowcError(
            "unknown-model",
            f"llm_judge metric '{metric}' needs a judge model"
            + (f"; '{model_name}' is not declared" if model_name else ""),
            hint=f"write 'metric {metric}: llm_judge(output = ..., target = ..., model = NAME)' "
            f"naming a declared model ({', '.join(models) or 'none declared'})",
        )
    return LLMJudge(metric, model_name, models[model_name], lm)
