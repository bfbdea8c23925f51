"""Golden files: compare a text with the file that records it, or rewrite the file.

    FLOWC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_golden.py   # regenerate

A `.flow` case may start with a `# RUN: -p check-types,estimate-cost` line naming the passes to
run (default: all); `run_line_passes` reads it.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

UPDATE_ENV = "FLOWC_UPDATE_GOLDEN"
_RUN = re.compile(r"^#\s*RUN:\s*-p\s+(\S+)\s*$", re.M)


def updating() -> bool:
    return os.environ.get(UPDATE_ENV, "") not in ("", "0", "false", "no")


def run_line_passes(text: str) -> str | None:
    """The pass list of a `# RUN: -p a,b` line, or None when the case has none."""
    m = _RUN.search(text)
    return m.group(1) if m else None


def check_golden(actual: str, path: str | Path) -> None:
    """Assert that `path` holds `actual`; with FLOWC_UPDATE_GOLDEN=1 write it instead."""
    p = Path(path)
    if updating():
        if not p.exists() or p.read_text(encoding="utf-8") != actual:
            p.write_text(actual, encoding="utf-8")
        return
    if not p.exists():
        raise AssertionError(f"no golden file {p}; create it with {UPDATE_ENV}=1")
    expected = p.read_text(encoding="utf-8")
    if expected != actual:
        diff = "".join(
            difflib.unified_diff(expected.splitlines(keepends=True), actual.splitlines(keepends=True), str(p), "actual")
        )
        raise AssertionError(f"{p} differs (regenerate with {UPDATE_ENV}=1 if the change is intended):\n{diff}")
