"""The per-model limiter: RPM and TPM hold across concurrent callers, driven by a fake clock."""

from __future__ import annotations

import asyncio

import pytest

from flowc.runtime.lm import LMRequest, chat
from flowc.runtime.ratelimit import RateLimiter, RateLimiters, estimate_tokens


class FakeClock:
    """Time that moves only when a caller sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_rpm_burst_then_spacing() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=60, clock=clock, sleep=clock.sleep)
    starts = []
    for _ in range(63):
        await limiter.acquire()
        starts.append(clock.now)
    # A full bucket lets 60 go at t=0; then one per second.
    assert starts[:60] == [0.0] * 60
    assert starts[60:] == pytest.approx([1.0, 2.0, 3.0])


async def test_rpm_holds_across_concurrent_callers() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=6, clock=clock, sleep=clock.sleep)
    starts: list[float] = []

    async def call() -> None:
        await limiter.acquire()
        starts.append(clock.now)

    await asyncio.gather(*(call() for _ in range(12)))
    starts.sort()
    # 6 at once, then one every 10 s: never more than 6 in any 60 s window beyond the burst.
    assert starts[:6] == [0.0] * 6
    assert starts[6:] == pytest.approx([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])


async def test_tpm_charges_estimate_and_settles_actual() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=1000, clock=clock, sleep=clock.sleep)
    r1 = await limiter.acquire(600)
    assert limiter.available_tokens == pytest.approx(400)
    # The call really used 100 tokens: 500 come back.
    r1.settle(100)
    assert limiter.available_tokens == pytest.approx(900)
    r1.settle(0)  # settling twice changes nothing
    assert limiter.available_tokens == pytest.approx(900)
    assert clock.sleeps == []


async def test_tpm_waits_for_refill() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=600, clock=clock, sleep=clock.sleep)  # 10 tokens/s
    await limiter.acquire(600)
    await limiter.acquire(100)
    assert clock.now == pytest.approx(10.0)


async def test_tpm_underestimate_charges_more() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=600, clock=clock, sleep=clock.sleep)
    r = await limiter.acquire(100)
    r.settle(700)  # used far more than estimated: bucket goes negative
    assert limiter.available_tokens == pytest.approx(600 - 700)
    await limiter.acquire(10)
    # 110 missing tokens at 10 tokens/s
    assert clock.now == pytest.approx(11.0)


async def test_request_larger_than_tpm_is_clamped_not_stuck() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=100, clock=clock, sleep=clock.sleep)
    await limiter.acquire(50)
    res = await limiter.acquire(10_000)
    assert res.estimated_tokens == 100
    assert clock.now == pytest.approx(30.0)


async def test_fifo_large_request_not_starved() -> None:
    clock = FakeClock()
    limiter = RateLimiter(tpm=600, clock=clock, sleep=clock.sleep)
    await limiter.acquire(600)
    order: list[str] = []

    async def call(name: str, tokens: int) -> None:
        await limiter.acquire(tokens)
        order.append(name)

    await asyncio.gather(call("big", 500), *(call(f"small{i}", 10) for i in range(3)))
    assert order[0] == "big"


async def test_both_limits_the_stricter_wins() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=600, tpm=60, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        await limiter.acquire(60)
    # TPM (1 token/s) binds, not RPM: 60 s between calls.
    assert clock.now == pytest.approx(120.0)


async def test_registry_unlimited_model_is_free() -> None:
    clock = FakeClock()
    reg = RateLimiters({"a": (1, None)}, clock=clock, sleep=clock.sleep)
    assert reg.get("b") is None
    for _ in range(100):
        (await reg.acquire("b", 10)).settle(3)
    assert clock.now == 0.0
    await reg.acquire("a", 0)
    await reg.acquire("a", 0)
    assert clock.now == pytest.approx(60.0)
    assert reg.get("a") is reg.get("a")


async def test_limiter_survives_a_new_event_loop() -> None:
    # The sync wrapper may use asyncio.run per call; the lock must not stay bound to a dead loop.
    limiter = RateLimiter(rpm=1000)

    def run_once() -> None:
        asyncio.run(limiter.acquire(1))

    await asyncio.to_thread(run_once)
    await asyncio.to_thread(run_once)
    await limiter.acquire(1)


def test_estimate_tokens_is_deterministic() -> None:
    req = LMRequest(model="m", messages=chat("sys", "x" * 400), max_tokens=50)
    assert estimate_tokens(req) == estimate_tokens(req)
    assert estimate_tokens(req) == (3 + 400) // 4 + 8 + 50
    assert estimate_tokens(LMRequest(model="m", messages=chat(None, ""))) == 4 + 256
