"""The folder of one evaluation: its checkpoint, report, settings, and a lock held while it runs.

<dir>/results.jsonl   one row per finished example (appended, flushed and fsynced as it finishes)
<dir>/report.json     the summary and every row, written at the end
<dir>/meta.json       how it was started: spec, data, metrics, model overrides, command line
<dir>/.lock           held (fcntl) by the process writing the folder; says which process it is

Each `flowc eval` gets a new folder under `.flowc/evals/<pipeline>-<data>/` (named by its start
time), so two evaluations of the same spec and data never write into each other's files; `--resume`
continues the latest one. Whoever writes a folder holds its lock: a second writer (two `--resume`s
at once, or two evals given the same `--out`) is refused with the process that holds it. The lock
is the kernel's, so a process killed with -9 leaves no stale lock behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from flowc.errors import FlowcError

try:  # POSIX; elsewhere folders are not locked
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

RESULTS, REPORT, META, LOCK = "results.jsonl", "report.json", "meta.json", ".lock"


def new_eval_dir(parent: Path) -> Path:
    """A fresh folder under `parent`, named by the time it starts (sortable) and a random tail."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = parent / f"{stamp}-{secrets.token_hex(2)}"
    path.mkdir(parents=True, exist_ok=False)
    return path


def latest_eval_dir(parent: Path) -> Path | None:
    """The most recently started evaluation folder under `parent`, if any."""
    if not parent.is_dir():
        return None
    found = sorted(p for p in parent.iterdir() if p.is_dir() and ((p / RESULTS).exists() or (p / META).exists()))
    return found[-1] if found else None


def resolve_eval_ref(ref: str, root: Path) -> Path:
    """An evaluation named on the command line: a folder, or a folder name (a unique prefix is
    enough) under `root` (.flowc/evals)."""
    p = Path(ref)
    if p.is_dir():
        return p
    found = sorted(d for d in root.glob("*/*") if d.is_dir() and d.name.startswith(ref)) if root.is_dir() else []
    if len(found) == 1:
        return found[0]
    raise FlowcError(
        "run-not-found",
        f"no evaluation folder '{ref}'" if not found else f"'{ref}' matches {len(found)} evaluations",
        hint=f"pass a folder (the report line of 'flowc eval' names it) or a folder name under {root}",
    )


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the folder's lock, or raise `run-locked` naming the process that holds it."""
    path.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # pragma: no cover
        yield
        return
    fh: IO[str] = (path / LOCK).open("a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = _holder(fh.read())
            raise FlowcError(
                "run-locked",
                f"'{path}' is being written by {holder}",
                hint="wait for that evaluation to finish (or stop it), or give this one another --out",
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "started": time.time(), "argv": sys.argv}) + "\n")
        fh.flush()
        yield
    finally:
        fh.close()  # closing releases the lock


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["started"])))
        cmd = " ".join(str(a) for a in info.get("argv", []))[:200]
        return f"process {info['pid']} (started {when}: {cmd})"
    except (ValueError, KeyError, TypeError):
        return "another process"


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file, the last one of each example winning; a line cut by a kill
    (not valid JSON) is skipped."""
    rows: dict[str, dict[str, Any]] = {}
    f = path / RESULTS
    if not f.exists():
        return []
    for line in f.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "id" in row:
            rows[str(row["id"])] = row
    return list(rows.values())


def rewrite_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Replace the results file with `rows`, atomically (so a cut line is gone for good)."""
    tmp = path / (RESULTS + ".tmp")
    tmp.write_text("".join(_line(r) for r in rows), encoding="utf-8")
    os.replace(tmp, path / RESULTS)


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=repr) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


class ResultsWriter:
    """Appends finished rows to results.jsonl, each flushed and fsynced before it counts as done."""

    def __init__(self, path: Path) -> None:
        self._fh = (path / RESULTS).open("a", encoding="utf-8")

    def append(self, row: dict[str, Any]) -> None:
        self._fh.write(_line(row))
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def _line(row: dict[str, Any]) -> str:
    text = json.dumps(row, ensure_ascii=False, default=repr)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(row, ensure_ascii=True, default=repr)
    return text + "\n"
