"""Every failed attempt of a model call, reported to whoever is recording the call.

A model client that retries (the litellm client's retry loop, its fallbacks) calls `report()` once
per failed attempt; the step's `RecordingClient` collects them with `observe()`, so the trace and
the run store show each retry with its error instead of one call that took a long time. The hook is
a context variable: it follows the call through `await`s inside one task and never crosses into a
concurrent call, and a client with nobody observing pays one `ContextVar.get`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import BaseModel, ConfigDict


class AttemptRecord(BaseModel):
    """One attempt at a model call that failed (the attempt that answered is the call itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str  # a fallback's attempts name the fallback model
    attempt: int  # 1-based, per model
    error_code: str
    error: str
    latency_s: float = 0.0
    retry_in_s: float | None = None  # the backoff before the next attempt; None: no retry followed


AttemptObserver = Callable[[AttemptRecord], None]

_observer: ContextVar[AttemptObserver | None] = ContextVar("flowc_attempt_observer", default=None)


def report(record: AttemptRecord) -> None:
    """Tell the current observer (if any) about a failed attempt."""
    observer = _observer.get()
    if observer is not None:
        observer(record)


@contextmanager
def observe(observer: AttemptObserver) -> Iterator[None]:
    """Collect the failed attempts of the calls made inside this block (in this task)."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)
