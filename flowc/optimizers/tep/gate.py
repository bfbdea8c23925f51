"""TEP's validation gate: keep a node's proposed prompt only if the validation score does not drop.

- `per_node`: each proposal alone on the validation set, then the accepted ones together (when more
  than one), keeping only the best alone if they fail together: (proposals + 1) validation passes.
- `joint_first`: all proposals together first; kept if the score does not drop, else `per_node`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass

from flowc.optimizers.scoring import accept
from flowc.optimizers.skeleton import Run

GATES = ("per_node", "joint_first")


@dataclass(frozen=True)
class GateResult:
    accepted: list[str]
    scores: dict[str, float | None]  # each proposal's validation score (None: it did not check)
    final: float | None  # the validation score of what was kept (None: nothing kept)
    joint: bool  # the joint pass decided


async def validation_gate(run: Run, proposals: Mapping[str, str], *, mode: str, validate: bool) -> GateResult:
    if not proposals:
        return GateResult([], {}, None, False)
    best = run.val_best

    async def score(changes: Mapping[str, str]) -> float | None:
        if not validate:
            return best if run.pipeline({**run.values, **changes}) is not None else None
        return await run.validate({**run.values, **changes})

    joint: float | None = None
    if mode == "joint_first" and len(proposals) > 1:
        joint = await score(proposals)
    if joint is not None and accept(joint, best):
        return GateResult(list(proposals), dict.fromkeys(proposals, joint), joint, True)
    singles = await asyncio.gather(*(score({p: v}) for p, v in proposals.items()))
    scored = dict(zip(proposals, singles, strict=True))
    accepted = [p for p, s in scored.items() if s is not None and accept(s, best)]
    final = max((scored[p] or 0.0 for p in accepted), default=None)
    if len(accepted) > 1:
        if mode == "joint_first" and len(accepted) == len(proposals):
            together = joint  # the joint pass already scored exactly these
        else:
            together = await score({p: proposals[p] for p in accepted})
        if together is None or not accept(together, best):
            accepted = [max(accepted, key=lambda p: scored[p] or 0.0)]
        else:
            final = together
    return GateResult(accepted, scored, final, False)
