"""Per-model request and token rate limits shared by every concurrent caller.

Providers count requests and tokens per minute; two token buckets per model mirror that. A
bucket holds up to one minute's allowance and refills continuously, so a burst of `rpm` calls
may go at once and afterwards calls are spaced `60 / rpm` seconds apart.

Tokens are not known before a call, so a caller charges an estimate (prompt length plus the
requested `max_tokens`) when it acquires, and `Reservation.settle(actual)` returns the difference
once the provider has reported usage. Waiters are served first come, first served: the lock is
held while the head of the queue sleeps, so a large request is never starved by small ones.

Time comes from injected `clock`/`sleep` callables, so tests drive a fake clock instead of
sleeping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from flowc.runtime.lm import LMRequest

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

# A rough, deterministic characters-per-token ratio for English text with BPE tokenizers; it
# only has to be good enough to pace calls, since the real usage corrects it afterwards.
CHARS_PER_TOKEN = 4
# Charged for a completion when a request sets no max_tokens.
DEFAULT_COMPLETION_ESTIMATE = 256


def estimate_tokens(request: LMRequest) -> int:
    """A deterministic upper-ish estimate of a request's prompt + completion tokens."""
    prompt = sum(len(m.content) for m in request.messages) // CHARS_PER_TOKEN + 4 * len(request.messages)
    completion = request.max_tokens if request.max_tokens is not None else DEFAULT_COMPLETION_ESTIMATE
    return prompt + completion


@dataclass
class _Bucket:
    """A token bucket: `capacity` units, refilled at `capacity / 60` units per second."""

    capacity: float
    level: float
    updated: float

    def refill(self, now: float) -> None:
        rate = self.capacity / 60.0
        self.level = min(self.capacity, self.level + (now - self.updated) * rate)
        self.updated = now

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` units are available (0 if they are now)."""
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.capacity


@dataclass
class Reservation:
    """What one call charged; `settle` corrects the token charge with the real usage."""

    limiter: RateLimiter | None
    estimated_tokens: int
    settled: bool = False

    def settle(self, actual_tokens: int | None) -> None:
        """Give back (or charge more for) the difference between estimate and real usage.

        Call it once per call, also after a failure: a failed call that used no tokens passes
        0, one whose usage is unknown passes None (the estimate stands).
        """
        if self.settled or self.limiter is None:
            return
        self.settled = True
        if actual_tokens is not None:
            self.limiter.adjust_tokens(self.estimated_tokens - actual_tokens)


@dataclass
class RateLimiter:
    """The RPM and TPM limits of one model, shared by all callers on one event loop."""

    rpm: int | None = None
    tpm: int | None = None
    clock: Clock = time.monotonic
    sleep: Sleep = asyncio.sleep
    _requests: _Bucket | None = field(init=False, default=None)
    _tokens: _Bucket | None = field(init=False, default=None)
    _lock: asyncio.Lock | None = field(init=False, default=None)
    _lock_loop: asyncio.AbstractEventLoop | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        now = self.clock()
        if self.rpm is not None:
            self._requests = _Bucket(float(self.rpm), float(self.rpm), now)
        if self.tpm is not None:
            self._tokens = _Bucket(float(self.tpm), float(self.tpm), now)

    def _get_lock(self) -> asyncio.Lock:
        # A sync wrapper may run several event loops one after another (asyncio.run per call);
        # an asyncio.Lock is bound to the loop that first waited on it, so keep one per loop.
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock = asyncio.Lock()
            self._lock_loop = loop
        return self._lock

    async def acquire(self, tokens: int = 0) -> Reservation:
        """Wait until one request and `tokens` tokens fit in the limits, then charge them.

        A request estimated above the whole TPM allowance is charged at the allowance, so it
        waits for a full bucket instead of forever.
        """
        charge = float(tokens)
        if self._tokens is not None:
            charge = min(charge, self._tokens.capacity)
        async with self._get_lock():
            while True:
                now = self.clock()
                wait = 0.0
                if self._requests is not None:
                    self._requests.refill(now)
                    wait = max(wait, self._requests.wait_for(1.0))
                if self._tokens is not None:
                    self._tokens.refill(now)
                    wait = max(wait, self._tokens.wait_for(charge))
                if wait <= 0.0:
                    break
                await self.sleep(wait)
            if self._requests is not None:
                self._requests.level -= 1.0
            if self._tokens is not None:
                self._tokens.level -= charge
        return Reservation(self, int(charge))

    def adjust_tokens(self, delta: float) -> None:
        """Return `delta` tokens to the TPM bucket (negative: charge more). May go below 0."""
        if self._tokens is not None:
            self._tokens.refill(self.clock())
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + delta)

    @property
    def available_tokens(self) -> float | None:
        """Tokens that could be charged now without waiting (None when TPM is unlimited)."""
        if self._tokens is None:
            return None
        self._tokens.refill(self.clock())
        return self._tokens.level

    @property
    def available_requests(self) -> float | None:
        """Requests that could start now without waiting (None when RPM is unlimited)."""
        if self._requests is None:
            return None
        self._requests.refill(self.clock())
        return self._requests.level


class RateLimiters:
    """One `RateLimiter` per model id, created on first use; share one instance between every
    client of a run (executor, optimizers) so the limits hold across all of them."""

    def __init__(
        self,
        limits: Mapping[str, tuple[int | None, int | None]] | None = None,
        *,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        """Args:
        limits: model id -> (rpm, tpm); models not named here are not limited.
        clock, sleep: time sources, injectable for tests.
        """
        self._limits = dict(limits or {})
        self._clock = clock
        self._sleep = sleep
        self._limiters: dict[str, RateLimiter] = {}

    def set_limits(self, model: str, rpm: int | None, tpm: int | None) -> None:
        """Declare (or replace) the limits of `model`; a model with neither limit is free.

        Declaring the limits a model already has keeps its limiter (and what it has charged),
        so several clients may declare the same policies on one shared registry.
        """
        if self._limits.get(model) == (rpm, tpm):
            return
        self._limits[model] = (rpm, tpm)
        self._limiters.pop(model, None)

    def get(self, model: str) -> RateLimiter | None:
        """The limiter of `model`, or None when it has no limits (the fast path)."""
        limiter = self._limiters.get(model)
        if limiter is not None:
            return limiter
        rpm, tpm = self._limits.get(model, (None, None))
        if rpm is None and tpm is None:
            return None
        limiter = self._new_limiter(model, rpm, tpm)
        self._limiters[model] = limiter
        return limiter

    def _new_limiter(self, model: str, rpm: int | None, tpm: int | None) -> RateLimiter:
        """The limiter a model gets on first use (a subclass may hold it elsewhere, e.g. in a Ray actor)."""
        return RateLimiter(rpm, tpm, clock=self._clock, sleep=self._sleep)

    async def acquire(self, model: str, tokens: int) -> Reservation:
        """Acquire on `model`'s limiter; returns a no-op reservation when it is unlimited."""
        limiter = self.get(model)
        if limiter is None:
            return Reservation(None, tokens)
        return await limiter.acquire(tokens)
