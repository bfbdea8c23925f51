"""Live progress on stderr, drawn with rich: bars and spinners on a terminal, plain lines in logs.

- `EvalProgress`: examples done / total, failures, the running score, the time per example, ETA;
- `StepProgress`: a run's steps as they complete (a spinner while it runs);
- `OptimizeProgress`: an optimizer's progress events (step, scores, spend against budget, ETA).

Off a terminal (CI logs, `2> file`) nothing is redrawn: each renderer writes a plain line now and
then (every `plain_every_s` seconds, and at the end), so a log shows where a long job stands.
"""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from flowc.optimizers.progress import duration


def err_console() -> Console:
    """The console progress goes to: stderr, so stdout stays the command's result."""
    return Console(file=sys.stderr, highlight=False, soft_wrap=True)


class _Live:
    """The shared part: a rich Progress on a terminal, timed plain lines elsewhere."""

    def __init__(self, console: Console | None = None, *, plain_every_s: float = 10.0) -> None:
        self.console = console or err_console()
        self.tty = self.console.is_terminal
        self.plain_every_s = plain_every_s
        self._last_plain = 0.0
        self.started = time.monotonic()
        self.progress: Progress | None = None

    def __enter__(self) -> _Live:
        if self.tty:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self.progress.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def plain(self, line: str, *, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self._last_plain >= self.plain_every_s:
            self._last_plain = now
            self.console.print(line, markup=False, highlight=False)


class EvalProgress(_Live):
    """Progress of an evaluation; `update` is `evaluate()`'s `on_progress`."""

    def __init__(self, label: str, metric: str | None, console: Console | None = None, **kw: Any) -> None:
        super().__init__(console, **kw)
        self.label = label
        self.metric = metric
        self.errors = 0
        self.scored = 0
        self.score_sum = 0.0
        self.seen = 0
        self._task: Any = None
        self._first_done: int | None = None

    def update(self, done: int, total: int, row: dict[str, Any] | None) -> None:
        if self._first_done is None:
            self._first_done = done  # examples already done by an earlier run (resume)
        if row is not None:
            self.seen += 1
            if row.get("status") != "ok":
                self.errors += 1
            elif self.metric is not None:
                self.scored += 1
                self.score_sum += float(row.get("scores", {}).get(self.metric, 0.0))
        status = self._status()
        if self.progress is not None:
            if self._task is None:
                self._task = self.progress.add_task(self.label, total=total, completed=done, status=status)
            self.progress.update(self._task, completed=done, total=total, status=status)
        else:
            elapsed = time.monotonic() - self.started
            rate = elapsed / self.seen if self.seen else None
            eta = f" · ETA {duration(rate * (total - done))}" if rate is not None and done < total else ""
            per = f" · {rate:.2f}s/example" if rate is not None else ""
            self.plain(f"{self.label} {done}/{total} · {status}{per}{eta}", force=done == total)

    def _status(self) -> str:
        parts = [f"{self.errors} failed" if self.errors else "0 failed"]
        if self.metric is not None and self.scored:
            parts.append(f"{self.metric} {self.score_sum / self.scored:.3f}")
        return " · ".join(parts)


class StepProgress(_Live):
    """A run's steps as they complete: one line per step, and a spinner while the run goes on."""

    def __init__(self, console: Console | None = None, *, show_steps: bool = True, **kw: Any) -> None:
        super().__init__(console, **kw)
        self.show_steps = show_steps
        self.steps = 0
        self._status: Any = None

    def __enter__(self) -> StepProgress:
        if self.tty:
            self._status = self.console.status("running…", spinner="dots")
            self._status.start()
        return self

    def close(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def step(self, run_id: str, step: Any) -> None:
        self.steps += 1
        if self._status is not None:
            elapsed = time.monotonic() - self.started
            self._status.update(f"running… {self.steps} step(s), last: {step.node}, {duration(elapsed)}")
        if self.show_steps and self.tty:
            mark = "✗" if step.status == "error" else "✓"
            calls = len(step.lm_calls)
            tail = f", {calls} LM call(s)" if calls else ""
            self.console.print(
                f"  {mark} [{step.seq}] {step.node} ({step.kind}) {step.duration_s:.2f}s{tail}",
                markup=False,
                highlight=False,
                style="dim",
            )


class OptimizeProgress(_Live):
    """Renders an optimizer's progress events (`flowc.optimizers.progress.ProgressEvent`, read by
    attribute): a bar over steps with the scores, the spend against the budget and the ETA on a
    terminal; one plain line per event elsewhere."""

    def __init__(self, console: Console | None = None, **kw: Any) -> None:
        super().__init__(console, plain_every_s=0.0, **kw)
        self._task: Any = None

    def __call__(self, event: Any) -> None:
        status = event_status(event)
        if self.progress is None:
            self.plain(event_line(event), force=True)
            return
        if self._task is None:
            self._task = self.progress.add_task(event.optimizer, total=event.max_steps, status=status)
        self.progress.update(self._task, completed=event.step, total=event.max_steps, status=status)
        if event.kind == "end":
            self.close()


def event_status(e: Any) -> str:
    """Scores, spend against the budget and ETA of a progress event, for the bar."""
    parts = []
    if getattr(e, "phase", None):
        parts.append(str(e.phase))
    if getattr(e, "val_best", None) is not None:
        parts.append(f"best {e.val_best:.3f}")
    elif getattr(e, "val", None) is not None:
        parts.append(f"val {e.val:.3f}")
    spent = getattr(e, "spent", {}) or {}
    budget = getattr(e, "budget", None)
    for axis, fmt in (("calls", "{:.0f} calls"), ("tokens", "{:,.0f} tok"), ("usd", "${:.4f}"), ("seconds", "{:.0f}s")):
        limit = getattr(budget, axis, None)
        used = float(spent.get(axis, 0.0))
        if limit or (axis == "calls") or (axis == "usd" and used):
            parts.append(fmt.format(used) + (f" / {fmt.format(limit)}" if limit else ""))
    if getattr(e, "eta_s", None) is not None and getattr(e, "kind", "") == "step":
        parts.append(f"ETA {duration(e.eta_s)}")
    return " · ".join(parts)


def event_line(e: Any) -> str:
    """One plain line for a progress event (the optimizers' own rendering when there is one)."""
    try:
        from flowc.optimizers import progress as opt_progress  # type: ignore[attr-defined, unused-ignore]

        line: str = opt_progress.render_line(e)
        return line
    except (ImportError, AttributeError):
        of = f"/{e.max_steps}" if getattr(e, "max_steps", None) else ""
        return f"{e.optimizer} {e.kind} {e.step}{of} · {event_status(e)} · {duration(e.elapsed_s)}"
