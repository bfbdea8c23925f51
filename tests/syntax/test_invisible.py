"""Characters that show as a space or as nothing are named, whichever diagnostic points at them."""

from __future__ import annotations

from pathlib import Path

import pytest

import flowc
from flowc.errors import SpecErrors
from flowc.source import describe_char

WRONG = Path(__file__).parent / "wrong"


def test_describe_char_names_invisible_characters() -> None:
    assert describe_char("\u00a0") == "U+00A0 (NO-BREAK SPACE)"
    assert describe_char("\u200b") == "U+200B (ZERO WIDTH SPACE)"
    assert describe_char("\ufeff") == "U+FEFF (ZERO WIDTH NO-BREAK SPACE)"
    assert describe_char("$") == "'$'"


def test_a_yaml_key_with_a_zero_width_space_gets_a_note() -> None:
    with pytest.raises(SpecErrors) as info:
        flowc.compile(str(WRONG / "invisible_zero_width.yaml"))
    [d] = info.value.errors
    assert any("U+200B (ZERO WIDTH SPACE)" in n and "column 11" in n for n in d.notes), d.notes


def test_a_leading_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    spec = tmp_path / "bom.flow"
    spec.write_text("\ufeffpipeline p {\n  input q: str\n  output a: str <- q\n}\n", encoding="utf-8")
    assert flowc.compile(str(spec)).name == "p"
