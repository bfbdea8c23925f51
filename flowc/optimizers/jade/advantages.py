"""Advantages for the transitions of one batch (ALGORITHMS.md §4.4).

The release runs PPO with GAE at γ = λ = 1 and a learned critic. Each transition is a single-turn
sample whose only reward sits on its last token, so with γ = λ = 1 every token's GAE advantage is
that reward minus the critic's value of the state: `A = r − V(s)`. flowc offers three baselines
`V` instead of a second copy of the backbone as critic (which would double the memory and the
compute of every update on a CPU):

- `group` (GRPO-style; the default): `V` = the mean reward of the same node's transitions in the
  other rollouts of the same question (`group_size` rollouts per question). The baseline knows the
  question and the role, as a critic would; it needs several rollouts per question;
- `batch`: `V` = the mean reward of the node's transitions in the whole batch (a critic that knows
  only the role); works with one rollout per question, as in the release (n = 1);
- `none`: `V` = 0, the raw reward (GAE with a zero critic).

`whiten` then centres and scales the advantages over the batch (verl whitens GAE advantages the
same way), so the step size does not depend on the reward's scale.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from flowc.errors import FlowcError
from flowc.optimizers.jade.buffer import ExperienceBuffer, Transition

BASELINES = ("group", "batch", "none")


def baseline_key(t: Transition, mode: str) -> tuple[object, ...]:
    if mode == "group":
        return (t.question, t.node)
    if mode == "batch":
        return (t.node,)
    return ()


def compute_advantages(transitions: Sequence[Transition], mode: str = "group", *, whiten: bool = True) -> list[float]:
    """One advantage per transition (see the module docstring)."""
    if mode not in BASELINES:
        raise FlowcError(
            "invalid-value", f"unknown advantage baseline '{mode}'", hint=f"use one of {', '.join(BASELINES)}"
        )
    if mode == "none":
        adv = [t.reward for t in transitions]
    else:
        groups: dict[tuple[object, ...], list[float]] = defaultdict(list)
        for t in transitions:
            groups[baseline_key(t, mode)].append(t.reward)
        means = {k: statistics.fmean(v) for k, v in groups.items()}
        adv = [t.reward - means[baseline_key(t, mode)] for t in transitions]
    if whiten and len(adv) > 1:
        mu = statistics.fmean(adv)
        sd = statistics.pstdev(adv)
        adv = [(a - mu) / (sd + 1e-6) if sd > 1e-8 else 0.0 for a in adv]
    return adv


def assign(buffer: ExperienceBuffer, mode: str = "group", *, whiten: bool = True) -> list[float]:
    buffer.advantages = compute_advantages(buffer.transitions, mode, whiten=whiten)
    return buffer.advantages


__all__ = ("BASELINES", "assign", "compute_advantages")
