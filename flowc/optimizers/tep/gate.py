"""TEP's validation gate: keep proposed prompts only if the validation score does not drop (and, on
a tie, only if they do not make the prompts longer: `scoring.accept`).

- `joint` (default): all proposals together in one validation pass; if that fails and there are
  several, each half of them (in pipeline order) together, keeping the better half that passes. At
  most three validation passes per iteration whatever the number of nodes, so the gate's cost
  grows like one forward pass: linearly with depth.
- `per_node`: each proposal alone, then the accepted ones together (when more than one), keeping
  only the best alone if they fail together: (proposals + 1) passes, so quadratic in depth on a
  chain (every pass runs the whole pipeline).
- `joint_first`: all proposals together first; kept if that passes, else `per_node`.

Scores are shared within an iteration: a candidate scored once (the same values) is not run again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass

from flowc.optimizers.scoring import accept, growth
from flowc.optimizers.skeleton import Run

GATES = ("joint", "per_node", "joint_first")


@dataclass(frozen=True)
class GateResult:
    accepted: list[str]
    scores: dict[str, float | None]  # each proposal's validation score (None: it did not check)
    final: float | None  # the validation score of what was kept (None: nothing kept)
    mode: str  # what decided: "joint", "halves" or "per_node"
    passes: int  # validation passes run


class _Scorer:
    """Validation scores of candidates (the kept values plus some proposals), each scored once."""

    def __init__(self, run: Run, validate: bool) -> None:
        self.run = run
        self.validate = validate
        self.memo: dict[str, float | None] = {}
        self.passes = 0

    async def __call__(self, changes: Mapping[str, str]) -> float | None:
        key = json.dumps(dict(sorted(changes.items())))
        if key not in self.memo:
            values = {**self.run.values, **changes}
            if not self.validate:  # no gate: a candidate that checks is as good as the best
                self.memo[key] = self.run.val_best if self.run.pipeline(values) is not None else None
            else:
                self.passes += 1
                self.memo[key] = await self.run.validate(values)
        return self.memo[key]

    def passes_gate(self, score: float | None, changes: Mapping[str, str]) -> bool:
        if score is None or not self.validate:
            return score is not None
        return accept(score, self.run.val_best, growth=growth(self.run.values, changes))


async def validation_gate(run: Run, proposals: Mapping[str, str], *, mode: str, validate: bool) -> GateResult:
    if not proposals:
        return GateResult([], {}, None, mode, 0)
    score = _Scorer(run, validate)
    if mode in ("joint", "joint_first") or len(proposals) == 1:
        joint = await score(proposals)
        if score.passes_gate(joint, proposals):
            return GateResult(list(proposals), dict.fromkeys(proposals, joint), joint, "joint", score.passes)
        if len(proposals) == 1:
            return GateResult([], dict.fromkeys(proposals, joint), None, "joint", score.passes)
        if mode == "joint":
            return await _halves(score, proposals, joint)
    return await _per_node(score, proposals)


async def _halves(score: _Scorer, proposals: Mapping[str, str], joint: float | None) -> GateResult:
    names = list(proposals)
    mid = len(names) // 2
    halves = [{p: proposals[p] for p in names[:mid]}, {p: proposals[p] for p in names[mid:]}]
    scores = await asyncio.gather(*(score(h) for h in halves))
    passing = [(s, -growth(score.run.values, h), i) for i, (h, s) in enumerate(zip(halves, scores, strict=True))]
    passing = [x for x in passing if score.passes_gate(x[0], halves[x[2]])]
    per: dict[str, float | None] = {}
    for h, s in zip(halves, scores, strict=True):
        per.update(dict.fromkeys(h, s))
    if not passing:
        return GateResult([], per, None, "halves", score.passes)
    best_score, _, i = max(passing, key=lambda x: (x[0] or 0.0, x[1], -x[2]))
    return GateResult(list(halves[i]), per, best_score, "halves", score.passes)


async def _per_node(score: _Scorer, proposals: Mapping[str, str]) -> GateResult:
    singles = await asyncio.gather(*(score({p: v}) for p, v in proposals.items()))
    scored = dict(zip(proposals, singles, strict=True))
    accepted = [p for p, s in scored.items() if score.passes_gate(s, {p: proposals[p]})]
    final = max((scored[p] or 0.0 for p in accepted), default=None)
    if len(accepted) > 1:
        together = {p: proposals[p] for p in accepted}
        both = await score(together)  # shared: the joint pass already scored it when all passed alone
        if not score.passes_gate(both, together):
            accepted = [max(accepted, key=lambda p: scored[p] or 0.0)]
        else:
            final = both
    return GateResult(accepted, scored, final, "per_node", score.passes)
