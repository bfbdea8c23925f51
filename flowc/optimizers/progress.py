"""Progress events of an optimization job: one per completed step, plus one when the baseline is
scored and one at the end. The skeleton (`flowc.optimizers.skeleton`) emits them; a front end
renders them (`plain_progress` writes one line per event; the CLI may use a richer renderer).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from flowc.optimizers.budget import Budget


@dataclass(frozen=True)
class ProgressEvent:
    """Where a job stands.

    kind: "baseline" (the validation baseline is scored), "step" (a step completed and was
        checkpointed) or "end" (the job returns its patch; `stopped_by` says why it ended early).
    step / max_steps: completed steps, and the most the job can run (None: not known in advance).
    phase: the optimizer's phase ("free", "nudged", "harvest", ...) or None.
    train: the score of the step's minibatch, when the step ran one.
    val: the step's candidate validation score, when it scored one; val_best the best kept so far.
    accepted: whether the step kept a change (None: it proposed none).
    spent / budget: what the job used so far (calls, tokens, usd, seconds; earlier sessions of a
        resumed job included) and its limits.
    elapsed_s / eta_s: wall time of the job, and the time the remaining steps would take at this
        session's mean step time (None without max_steps or before a step completed here).
    """

    optimizer: str
    kind: str
    step: int
    max_steps: int | None
    spent: dict[str, float]
    budget: Budget
    elapsed_s: float
    eta_s: float | None = None
    phase: str | None = None
    train: float | None = None
    val: float | None = None
    val_best: float | None = None
    accepted: bool | None = None
    stopped_by: str | None = None
    details: dict[str, Any] = field(default_factory=dict)  # numeric ones are shown (reward, loss, kl, ...)

    def budget_share(self) -> dict[str, float]:
        """The spent share of every limited budget axis (0..1)."""
        limits = {
            "calls": self.budget.calls,
            "tokens": self.budget.tokens,
            "usd": self.budget.usd,
            "seconds": self.budget.seconds,
        }
        return {k: (self.spent.get(k, 0.0) / v if v else 1.0) for k, v in limits.items() if v is not None}


ProgressHook = Callable[[ProgressEvent], None]


def duration(seconds: float) -> str:
    """Seconds as people read them: 42s, 3m07s, 2h05m."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _detail(key: str, value: Any) -> str | None:
    """A numeric detail of a step (a weight-training step's reward, loss, KL, tokens/s), or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if key == "tokens_per_s":
        return f"{value:,.0f} tok/s"
    return f"{key} {value:.3g}" if abs(value) >= 1e-3 or value == 0 else f"{key} {value:.1e}"


def render_line(e: ProgressEvent) -> str:
    """One plain line for an event, e.g. `textgrad step 3/12 · train 0.67 · val 0.70 kept · best 0.70 ·
    41 calls, 12,030 tok / 400 calls · 1m12s, ETA 4m48s` (on one line)."""
    if e.kind == "baseline":
        head = f"{e.optimizer} baseline"
    elif e.kind == "end":
        head = f"{e.optimizer} done after {e.step} step(s)" + (f" ({e.stopped_by})" if e.stopped_by else "")
    else:
        of = f"/{e.max_steps}" if e.max_steps is not None else ""
        head = f"{e.optimizer} step {e.step}{of}" + (f" [{e.phase}]" if e.phase else "")
    parts = [head]
    if e.train is not None:
        parts.append(f"train {e.train:.2f}")
    if e.val is not None:
        verdict = "" if e.accepted is None else " kept" if e.accepted else " rejected"
        parts.append(f"val {e.val:.2f}{verdict}")
    if e.val_best is not None:
        parts.append(f"best {e.val_best:.2f}")
    parts += [shown for k, v in e.details.items() if (shown := _detail(k, v))]
    spent = f"{int(e.spent.get('calls', 0))} calls, {int(e.spent.get('tokens', 0)):,} tok"
    limits = e.budget.describe()
    parts.append(spent + (f" / {limits}" if limits != "unlimited" else ""))
    timing = duration(e.elapsed_s)
    if e.eta_s is not None and e.kind == "step":
        timing += f", ETA {duration(e.eta_s)}"
    parts.append(timing)
    return " · ".join(parts)


def plain_progress(stream: TextIO | None = None) -> ProgressHook:
    """A hook that writes `render_line(event)` for every event (stderr by default)."""

    def hook(event: ProgressEvent) -> None:
        out = stream or sys.stderr
        out.write(render_line(event) + "\n")
        out.flush()

    return hook


__all__ = ("ProgressEvent", "ProgressHook", "plain_progress", "render_line")
