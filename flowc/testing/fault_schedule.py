"""A seeded fault schedule for the fake OpenAI server: which requests fail, and how.

`FaultSchedule(rate=0.2, seed=7)` is a `default` for `FakeOpenAIServer`: each request fails with
probability `rate`, the kind drawn evenly from `kinds` (429 with Retry-After, 500, a hang past the
client's timeout, a malformed body, a body cut off mid-way, a connection closed without an
answer); the others get `ok`. The draw depends only on the seed, the request's body and how many
times that same body was asked before, never on arrival order: a concurrent run, a retry and a
resumed run meet the same faults at the same points, so a failure found once is found again.
`counts` says how many of each were served.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowc.testing.fake_server import Reply

KINDS = ("rate_limited", "server_error", "timeout", "malformed", "cut_body", "reset")


def fault_reply(kind: str, *, retry_after: float = 0.05) -> Reply:
    """The reply that injects one kind of fault."""
    if kind == "rate_limited":
        return Reply.rate_limited(retry_after=retry_after)
    if kind == "server_error":
        return Reply.server_error(500)
    if kind == "timeout":
        return Reply.hanging()
    if kind == "malformed":
        return Reply(malformed=True)
    if kind == "cut_body":
        return Reply(cut_body=True)
    if kind == "reset":
        return Reply(reset=True)
    raise ValueError(f"unknown fault kind {kind!r}; kinds: {', '.join(KINDS)}")


@dataclass
class FaultSchedule:
    """A `default` for FakeOpenAIServer: faults at `rate`, drawn from `kinds`, seeded."""

    rate: float = 0.2
    seed: int = 0
    kinds: tuple[str, ...] = KINDS
    ok: Callable[[dict[str, Any]], Reply] = field(default=lambda body: Reply(text="ok"))
    counts: Counter[str] = field(default_factory=Counter, init=False)
    _seen: Counter[str] = field(default_factory=Counter, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        for k in self.kinds:
            fault_reply(k)  # an unknown kind fails now, not on the first request that draws it

    def __call__(self, body: dict[str, Any]) -> Reply:
        key = hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()
        with self._lock:
            nth = self._seen[key]
            self._seen[key] += 1
        draw = hashlib.sha256(f"{self.seed}:{key}:{nth}".encode()).digest()
        u = int.from_bytes(draw[:8], "big") / 2**64
        if u < self.rate:
            kind = self.kinds[int.from_bytes(draw[8:12], "big") % len(self.kinds)]
            with self._lock:
                self.counts[kind] += 1
            return fault_reply(kind)
        with self._lock:
            self.counts["ok"] += 1
        return self.ok(body)


def main(argv: list[str] | None = None) -> None:
    """`python -m flowc.testing.fault_schedule --rate 0.2 --seed 7 [--stats FILE]`: a fake server
    with this schedule, in its own process (so a benchmark can kill -9 the client and not it).
    Prints the base URL on the first line; on SIGTERM/SIGINT writes the counts to FILE and stops."""
    import argparse
    import signal
    from pathlib import Path

    from flowc.testing.fake_server import FakeOpenAIServer

    p = argparse.ArgumentParser(prog="python -m flowc.testing.fault_schedule")
    p.add_argument("--rate", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each ok answer")
    p.add_argument("--stats", help="write the served counts here (JSON) when stopped")
    args = p.parse_args(argv)
    ok_reply = Reply(text="ok", latency_s=args.latency)
    schedule = FaultSchedule(args.rate, args.seed, tuple(k for k in args.kinds.split(",") if k), ok=lambda b: ok_reply)
    srv = FakeOpenAIServer(default=schedule, record=False).start()
    print(srv.base_url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    srv.stop()
    if args.stats:
        Path(args.stats).write_text(json.dumps({"hits": srv.hits, **schedule.counts}) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
