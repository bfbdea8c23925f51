"""RPM/TPM limits (and a job's call allowance) shared by every worker: one Ray actor owns them.

A provider counts a key's requests and tokens per minute whatever process sends them, so N workers
with a limiter each would send N times the allowed rate. Instead `LimitsService` — the same token
buckets as a single process uses (`flowc.runtime.ratelimit`) — runs as one asyncio actor, and each
worker's model client acquires from it through `SharedLimiters`: a `RateLimiters` whose limiters
forward `acquire` and the token correction of `settle` to the actor. A model without limits
never reaches the actor (the fast path is local), and a limited call costs one round trip to the
actor (about a millisecond on one machine) next to a model call of tens of milliseconds or more.

The actor also holds an optional allowance of LM calls and tokens (what an optimization job's
budget has left when a batch is sent out): a call past it fails with `budget-exceeded`, so the
workers together never spend more than the driver's budget allows.
"""

from __future__ import annotations

import time
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime.ratelimit import RateLimiter, RateLimiters, Reservation


class LimitsService:
    """The shared buckets. A plain class (tests use it in process); `cluster.remote_limits` runs it
    as a Ray actor. Keeps when each grant was made and for whom, so a test can check the rate."""

    def __init__(self) -> None:
        self._limiters = RateLimiters()
        self._grants: list[tuple[float, str, str]] = []  # (monotonic time, model, worker)
        self._calls_left: int | None = None
        self._tokens_left: int | None = None

    async def acquire(self, model: str, rpm: int | None, tpm: int | None, tokens: int, worker: str) -> int:
        """Wait until one request and `tokens` tokens of `model` fit; returns the tokens charged."""
        self._limiters.set_limits(model, rpm, tpm)  # idempotent: the same limits keep their buckets
        reservation = await self._limiters.acquire(model, tokens)
        self._grants.append((time.monotonic(), model, worker))
        return reservation.estimated_tokens

    def adjust(self, model: str, delta: float) -> None:
        """Give back (or charge more of) `delta` tokens once a call's real usage is known."""
        limiter = self._limiters.get(model)
        if limiter is not None:
            limiter.adjust_tokens(delta)

    def set_allowance(self, calls: int | None, tokens: int | None) -> None:
        """What the workers may still spend (None: no limit) until the next allowance."""
        self._calls_left, self._tokens_left = calls, tokens

    def take(self, tokens: int) -> str | None:
        """Charge one call of about `tokens` tokens to the allowance; the reason when it is spent."""
        if self._calls_left is not None:
            if self._calls_left <= 0:
                return "the budget's LM calls are spent"
            self._calls_left -= 1
        if self._tokens_left is not None:
            if self._tokens_left < tokens:
                return "the next call could pass the budget's tokens"
            self._tokens_left -= tokens
        return None

    def grants(self) -> list[tuple[float, str, str]]:
        return list(self._grants)


class SharedLimiters(RateLimiters):
    """A worker's rate-limit registry: limits are declared locally (so unlimited models never leave
    the process), acquisitions go to the shared actor."""

    def __init__(self, actor: Any, worker: str) -> None:
        super().__init__()
        self._actor = actor
        self._worker = worker

    def _new_limiter(self, model: str, rpm: int | None, tpm: int | None) -> RateLimiter:
        return _RemoteLimiter(self._actor, model, rpm, tpm, self._worker)


class _RemoteLimiter(RateLimiter):
    """One model's limits, held by the shared actor."""

    def __init__(self, actor: Any, model: str, rpm: int | None, tpm: int | None, worker: str) -> None:
        super().__init__(rpm, tpm)
        self._actor = actor
        self._model = model
        self._worker = worker

    async def acquire(self, tokens: int = 0) -> Reservation:
        charged = await self._actor.acquire.remote(self._model, self.rpm, self.tpm, tokens, self._worker)
        return Reservation(self, int(charged))

    def adjust_tokens(self, delta: float) -> None:
        if delta:
            self._actor.adjust.remote(self._model, delta)  # fire and forget: nothing waits on it


class AllowanceLM:
    """A worker's model client that charges every call to the job's shared allowance first."""

    def __init__(self, inner: Any, actor: Any) -> None:
        self.inner = inner
        self._actor = actor

    async def complete(self, request: Any) -> Any:
        from flowc.runtime.ratelimit import estimate_tokens

        refused = await self._actor.take.remote(estimate_tokens(request))
        if refused:
            raise FlowcError("budget-exceeded", refused, hint="raise the job's budget, or lower its size")
        return await self.inner.complete(request)
