"""What a run leaves behind: every step (node firing) with its inputs, outputs and LM calls.

These records are what the run store persists, what `flowc trace` shows, and what optimizers read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class LMCallRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    node: str | None
    model: str
    request: dict[str, Any]
    response: str | None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    cached: bool = False
    error: str | None = None


class StepRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seq: int
    node: str
    kind: str
    iteration: int  # how many times this node had run before, in this run
    inputs: dict[str, Any]
    outputs: dict[str, Any] = Field(default_factory=dict)
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    note: str | None = None  # e.g. a router's fallback, a loop running out
    started_s: float = 0.0  # since the run started
    duration_s: float = 0.0
    lm_calls: list[LMCallRecord] = Field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(c.prompt_tokens + c.completion_tokens for c in self.lm_calls)


class RunResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    pipeline: str
    artifact_hash: str
    inputs: dict[str, Any]
    outputs: dict[str, Any] = Field(default_factory=dict)
    steps: list[StepRecord] = Field(default_factory=list)
    status: Literal["ok", "error", "running"] = "ok"  # running: a stored run that never finished
    error: str | None = None
    error_code: str | None = None
    duration_s: float = 0.0

    @property
    def path(self) -> list[str]:
        """The nodes in the order they ran."""
        return [s.node for s in self.steps]

    @property
    def lm_calls(self) -> list[LMCallRecord]:
        return [c for s in self.steps for c in s.lm_calls]

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.steps)

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.lm_calls)
