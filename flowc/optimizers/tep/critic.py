"""TEP's local critic: its prompts (prompts/*.md), reading its JSON verdict, and the actor's
sampling temperature."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from string import Template
from typing import Any

from flowc.optimizers.tep.rubric import Criterion
from flowc.runtime.lm import LMClient, LMRequest, LMResponse


def prompt(name: str, **values: object) -> str:
    from importlib.resources import files

    text = files("flowc.optimizers.tep").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8")
    return Template(text).substitute({k: str(v) for k, v in values.items()}).strip()


class TemperatureLM:
    """Runs the pipeline's calls at the actor temperature sampled for this iteration."""

    def __init__(self, inner: LMClient, temperature: float) -> None:
        self.inner = inner
        self.temperature = temperature

    async def complete(self, request: LMRequest) -> LMResponse:
        return await self.inner.complete(request.model_copy(update={"temperature": self.temperature}))


@dataclass(frozen=True)
class CriticResult:
    scores: dict[str, int]
    suggestions: tuple[str, ...]
    no_change: bool
    readable: bool

    @property
    def overall(self) -> float | None:
        return statistics.fmean(self.scores.values()) if self.scores else None


def parse_critic(text: str, rubric: Sequence[Criterion], max_suggestions: int, max_words: int) -> CriticResult:
    """Read the critic's JSON; tolerate prose around it. Unreadable replies suggest nothing."""
    ids = {c.id for c in rubric}
    start, end = text.find("{"), text.rfind("}")
    obj: Any = None
    if 0 <= start < end:
        try:
            obj = json.loads(text[start : end + 1])
        except json.JSONDecodeError:
            obj = None
    if not isinstance(obj, dict):
        return CriticResult({}, (), False, False)
    scores: dict[str, int] = {}
    scores_obj = obj.get("scores")
    raw_scores: dict[str, Any] = scores_obj if isinstance(scores_obj, dict) else {}
    for k, v in raw_scores.items():
        if k in ids and isinstance(v, int | float):
            scores[k] = int(min(5, max(1, round(v))))
    sugg_obj = obj.get("suggestions")
    raw: list[Any] = sugg_obj if isinstance(sugg_obj, list) else []
    sugg = tuple(" ".join(str(s).split()[:max_words]) for s in raw if str(s).strip())[:max_suggestions]
    return CriticResult(scores, sugg, bool(obj.get("no_further_improvement", False)), True)
