"""docs/security.md names, for each line of the trust model, the test that holds it: those tests exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "security.md"
# `tests/a/b.py::test_x`, `b.py::test_x` (a file named before), `::test_x` (the last file named)
_REF = re.compile(r"`((?:tests/[\w/*.-]+|[\w*.-]+)\.(?:py|flow|yaml))?(?:::(\w+))?(?: \([^`]*\))?`")


def _find(name: str) -> list[Path]:
    if name.startswith("tests/"):
        return sorted(ROOT.glob(name))
    return sorted((ROOT / "tests").rglob(name))


def test_every_test_the_trust_model_cites_exists() -> None:
    text = DOC.read_text(encoding="utf-8")
    cited, last = 0, None
    for m in _REF.finditer(text):
        file, func = m.group(1), m.group(2)
        if file is None and func is None:
            continue
        if file is not None:
            found = _find(file)
            assert found, f"docs/security.md cites {file}, which does not exist"
            last = found[0]
        if func is not None:
            assert last is not None, f"'::{func}' with no file before it"
            assert re.search(rf"^def {func}\(", last.read_text(encoding="utf-8"), re.M), f"no {func} in {last}"
        cited += 1
    assert cited >= 15
