"""Budgets, counted at the model client: every call — the pipeline's and the optimizer's — goes
through one MeteredLM, which refuses a call that could take the job past any limit. Refused calls
raise BudgetExceeded, which optimizers catch to stop cleanly with their best result so far."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from flowc.errors import FlowcError
from flowc.runtime.lm import LMClient, LMRequest, LMResponse


@dataclass(frozen=True)
class Budget:
    """Limits of one optimization job; None means no limit on that axis."""

    calls: int | None = None
    tokens: int | None = None
    usd: float | None = None
    seconds: float | None = None

    def describe(self) -> str:
        parts = [
            f"{self.calls} calls" if self.calls is not None else "",
            f"{self.tokens} tokens" if self.tokens is not None else "",
            f"${self.usd}" if self.usd is not None else "",
            f"{self.seconds}s" if self.seconds is not None else "",
        ]
        return ", ".join(p for p in parts if p) or "unlimited"


class BudgetExceeded(FlowcError):
    def __init__(self, axis: str, message: str) -> None:
        super().__init__("budget-exceeded", message, hint=f"raise the {axis} budget, or lower the job's size")
        self.axis = axis

    @staticmethod
    def axis_of(message: str) -> str:
        """The axis a BudgetExceeded message (as a run's error text keeps it) is about."""
        if "LM calls" in message:
            return "calls"
        if "tokens" in message:
            return "tokens"
        if "$" in message:
            return "usd"
        if "time budget" in message:
            return "seconds"
        return "calls"


def estimate_tokens(request: LMRequest) -> int:
    """A deliberately high estimate of a call's tokens (4 characters a token, plus max_tokens)."""
    prompt = sum(len(m.content) for m in request.messages) // 3 + 8 * len(request.messages)
    return prompt + (request.max_tokens or 512)


@dataclass
class Meter:
    budget: Budget
    calls: int = 0
    tokens: int = 0
    usd: float = 0.0
    started: float = field(default_factory=time.monotonic)
    elapsed_before: float = 0.0  # seconds spent in earlier (interrupted) sessions of the job
    # Calls admitted but not answered yet: concurrent calls must not all pass the same check.
    pending_calls: int = 0
    pending_tokens: int = 0

    @property
    def seconds(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    def admit(self, request: LMRequest) -> int:
        """Reserve room for one call or raise BudgetExceeded; returns the tokens reserved."""
        b = self.budget
        est = estimate_tokens(request)
        if b.calls is not None and self.calls + self.pending_calls + 1 > b.calls:
            raise BudgetExceeded("calls", f"the budget of {b.calls} LM calls is spent")
        if b.tokens is not None and self.tokens + self.pending_tokens + est > b.tokens:
            raise BudgetExceeded(
                "tokens", f"the next call could pass the budget of {b.tokens} tokens ({self.tokens} used)"
            )
        if b.usd is not None and self.usd >= b.usd:
            raise BudgetExceeded("usd", f"the budget of ${b.usd} is spent (${self.usd:.4f})")
        if b.seconds is not None and self.seconds >= b.seconds:
            raise BudgetExceeded("seconds", f"the time budget of {b.seconds}s is spent")
        self.pending_calls += 1
        self.pending_tokens += est
        return est

    def release(self, reserved: int) -> None:
        self.pending_calls -= 1
        self.pending_tokens -= reserved

    def charge(self, response: LMResponse) -> None:
        self.calls += 1
        self.tokens += response.total_tokens
        self.usd += response.cost_usd

    def used(self) -> dict[str, float]:
        return {
            "calls": self.calls,
            "tokens": self.tokens,
            "usd": round(self.usd, 6),
            "seconds": round(self.seconds, 3),
        }


class MeteredLM:
    """An LMClient that charges every answered call to a Meter and refuses calls past the budget."""

    def __init__(self, inner: LMClient, meter: Meter) -> None:
        self.inner = inner
        self.meter = meter

    async def complete(self, request: LMRequest) -> LMResponse:
        reserved = self.meter.admit(request)
        try:
            response = await self.inner.complete(request)
        finally:
            self.meter.release(reserved)
        if not response.cached:
            self.meter.charge(response)
        return response
