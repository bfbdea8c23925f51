"""Golden IR tests: each `tests/golden/<case>.flow` compiles to the IR recorded in `<case>.ir`.

Regenerate after an intended change with `FLOWC_UPDATE_GOLDEN=1 .venv/bin/python -m pytest
tests/test_golden.py` and review the diff. Files starting with `_` are helpers (imported subflows).
"""

from __future__ import annotations

from pathlib import Path

import pytest

import flowc
from flowc.ir.printer import dump_ir
from flowc.passes.pipeline import parse_pass_list
from flowc.testing.golden import check_golden, run_line_passes

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p for p in GOLDEN.glob("*.flow") if not p.name.startswith("_"))


def test_there_are_cases() -> None:
    assert len(CASES) >= 5


@pytest.mark.parametrize("case", CASES, ids=[p.stem for p in CASES])
def test_golden_ir(case: Path) -> None:
    passes = run_line_passes(case.read_text(encoding="utf-8"))
    compiled = flowc.compile(case, passes=parse_pass_list(passes) if passes else None)
    if passes:
        assert list(compiled.pass_log) == passes.split(",")
    check_golden(dump_ir(compiled.graph), case.with_suffix(".ir"))


def test_golden_files_have_cases() -> None:
    orphans = [p.name for p in GOLDEN.glob("*.ir") if not p.with_suffix(".flow").exists()]
    assert not orphans, f"golden files without a case: {orphans}"
