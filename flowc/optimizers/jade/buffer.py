"""JADE's unified experience buffer: every role's (prompt, completion, reward) transition of a batch
of rollouts, in one list (ALGORITHMS.md §4.4: "every transition (any role) is its own single-turn
PPO sample; all are concatenated into one batch").

A `Transition` is one LM call of the trainable backbone in one rollout: the chat messages the node
sent (its role prompt, rendered), the reply that was sampled, and the reward it earns — the
episode's outcome (the pipeline metric, shared by every role of the episode) plus the call's own
format penalty minus the episode's efficiency cost. Advantages are assigned per batch
(`advantages.py`) and kept beside the transitions, so the transitions stay immutable.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Transition:
    """One call of the trainable model in one rollout.

    Attributes:
        episode: the rollout's index in its batch.
        question: the question's index in its batch (rollouts of one question form a group).
        node / role: the node that called, and its declared role (its name when it declares none).
        call: the call's position among the episode's calls of the trainable model.
        messages: the chat messages sent ({"role", "content"}), as the trace recorded them.
        completion: the sampled reply.
        finished: the reply ended with the end-of-turn token (False: cut by max_tokens).
        penalty: the local format penalty (0, or the configured negative penalty).
        reasons: why the penalty applies ("unparseable", "fallback", "untagged", ...).
        outcome: the episode's outcome reward (the pipeline metric), shared by its transitions.
        cost: the episode's efficiency cost (0 unless cost terms are configured).
    """

    episode: int
    question: int
    node: str
    role: str
    call: int
    messages: tuple[dict[str, str], ...]
    completion: str
    finished: bool
    penalty: float = 0.0
    reasons: tuple[str, ...] = ()
    outcome: float = 0.0
    cost: float = 0.0

    @property
    def reward(self) -> float:
        """The transition's scalar reward: outcome + local penalty − efficiency cost (JADE's
        `fmt_pen + R_out − α·turns − β·retrievals`), placed on the reply's last token."""
        return self.outcome + self.penalty - self.cost

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["messages"] = list(self.messages)
        data["reasons"] = list(self.reasons)
        data["reward"] = self.reward
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Transition:
        fields = {k: v for k, v in data.items() if k not in ("reward", "advantage")}
        fields["messages"] = tuple(dict(m) for m in fields["messages"])
        fields["reasons"] = tuple(fields.get("reasons", ()))
        return cls(**fields)


@dataclass
class ExperienceBuffer:
    """The transitions of one batch of rollouts, and (once assigned) one advantage per transition."""

    transitions: list[Transition] = field(default_factory=list)
    advantages: list[float] | None = None
    #: the outcome reward of every episode (also those without a call of the trainable model)
    outcomes: dict[int, float] = field(default_factory=dict)

    def add_episode(self, episode: int, outcome: float, transitions: Iterable[Transition]) -> None:
        self.outcomes[episode] = outcome
        self.transitions.extend(transitions)
        self.advantages = None

    def __len__(self) -> int:
        return len(self.transitions)

    def __iter__(self) -> Iterator[Transition]:
        return iter(self.transitions)

    def roles(self) -> list[str]:
        return sorted({t.role for t in self.transitions})

    def stats(self) -> dict[str, Any]:
        """Mean outcome (per episode), mean reward and penalty rate (per transition), per role counts."""
        ts = self.transitions
        per_role: dict[str, dict[str, float]] = {}
        for role in self.roles():
            mine = [t for t in ts if t.role == role]
            per_role[role] = {
                "n": len(mine),
                "reward": statistics.fmean(t.reward for t in mine),
                "penalized": sum(1 for t in mine if t.penalty) / len(mine),
            }
        return {
            "episodes": len(self.outcomes),
            "transitions": len(ts),
            "outcome": statistics.fmean(self.outcomes.values()) if self.outcomes else 0.0,
            "reward": statistics.fmean(t.reward for t in ts) if ts else 0.0,
            "penalized": sum(1 for t in ts if t.penalty) / len(ts) if ts else 0.0,
            "roles": per_role,
        }

    def save(self, path: Path) -> None:
        """One JSON line per transition (with its advantage), for reading what a step trained on."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8") as fh:
            for i, t in enumerate(self.transitions):
                row = t.to_json()
                if self.advantages is not None:
                    row["advantage"] = self.advantages[i]
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> ExperienceBuffer:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        buf = cls([Transition.from_json(r) for r in rows])
        for t in buf.transitions:
            buf.outcomes.setdefault(t.episode, t.outcome)
        if rows and all("advantage" in r for r in rows):
            buf.advantages = [float(r["advantage"]) for r in rows]
        return buf


def mean_or_zero(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


__all__ = ("ExperienceBuffer", "Transition", "mean_or_zero")
