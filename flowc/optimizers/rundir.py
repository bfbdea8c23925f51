"""The run directory of an optimization job: what it tried, what it kept, and where it stopped.

<dir>/job.json          the job's settings (optimizer, seed, budget, data hashes), for resume checks
<dir>/candidates.jsonl  every candidate: id, parent, step, params changed, scores, accepted, rationale
<dir>/log.jsonl         every phase/step event an optimizer reports (prompts before/after, edit ratios…)
<dir>/journal.jsonl     every LM call answered (see journal.py)
<dir>/state.json        the optimizer's state after its last completed step (atomic writes)
<dir>/patch.json        the final ParamPatch
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False, default=repr) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


class RunDir:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    @property
    def journal_path(self) -> Path:
        return self.path / "journal.jsonl"

    def check_job(self, job: dict[str, Any], *, resume: bool) -> None:
        """Record the job's settings; on resume, refuse a directory made by a different job."""
        f = self.path / "job.json"
        if f.exists():
            old = json.loads(f.read_text(encoding="utf-8"))
            if not resume:
                raise FlowcError(
                    "invalid-value",
                    f"'{self.path}' already holds an optimization job",
                    hint="pass --resume to continue it, or choose another --run-dir",
                )
            if old != job:
                diff = sorted(k for k in set(old) | set(job) if old.get(k) != job.get(k))
                raise FlowcError(
                    "invalid-value",
                    f"'{self.path}' holds a different job (differs in {', '.join(diff)})",
                    hint="resume with the same spec, data, optimizer, seed and budget",
                )
            return
        f.write_text(json.dumps(job, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    def candidate(self, **row: Any) -> None:
        _append(self.path / "candidates.jsonl", row)

    def log(self, **row: Any) -> None:
        _append(self.path / "log.jsonl", row)

    def save_state(self, state: dict[str, Any]) -> None:
        tmp = self.path / "state.json.tmp"
        tmp.write_text(json.dumps(state, indent=2, ensure_ascii=False, default=repr), encoding="utf-8")
        os.replace(tmp, self.path / "state.json")

    def load_state(self) -> dict[str, Any] | None:
        f = self.path / "state.json"
        if not f.exists():
            return None
        loaded: dict[str, Any] = json.loads(f.read_text(encoding="utf-8"))
        return loaded

    def candidates(self) -> list[dict[str, Any]]:
        return _rows(self.path / "candidates.jsonl")

    def logs(self) -> list[dict[str, Any]]:
        """The step log, one row a step (what `log` appended)."""
        return _rows(self.path / "log.jsonl")


def _rows(f: Path) -> list[dict[str, Any]]:
    if not f.exists():
        return []
    return [json.loads(x) for x in f.read_text(encoding="utf-8").splitlines() if x.strip()]


def truncate_after(path: Path, step: int) -> None:
    """Drop rows of `path` (JSONL) logged after completed step `step`: an interrupted step re-runs
    on resume and logs its rows again."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if int(row.get("step", 0)) <= step:
            keep.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(x + "\n" for x in keep), encoding="utf-8")
    os.replace(tmp, path)
