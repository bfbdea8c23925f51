"""What a run leaves behind: every step (node firing) with its inputs, outputs and LM calls.

These records are what the run store persists, what `flowc trace` shows, and what optimizers read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from flowc.runtime.attempts import AttemptRecord


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
    # The attempts that failed before this call answered (or before it gave up, `error` then
    # repeating the last one): retries and fallbacks, each with its error.
    attempts: list[AttemptRecord] = Field(default_factory=list)

    @property
    def retries(self) -> int:
        """Attempts made after the first one."""
        return max(len(self.attempts) - (1 if self.error else 0), 0)


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
    # running: a stored run not finished yet; interrupted: one whose process died before it finished
    status: Literal["ok", "error", "running", "interrupted"] = "ok"
    error: str | None = None
    error_code: str | None = None
    duration_s: float = 0.0
    # How the run was started, as the run store records it: the model ids in use and which ones
    # were overridden (`--model`), the process that ran it.
    meta: dict[str, Any] = Field(default_factory=dict)

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

    @property
    def retries(self) -> int:
        return sum(c.retries for c in self.lm_calls)
