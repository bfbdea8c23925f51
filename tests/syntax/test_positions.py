"""Columns inside one-line quoted strings count source characters, not characters of the value."""

from __future__ import annotations

import json

import pytest

from flowc.source import value_column


@pytest.mark.parametrize(
    "raw",
    [
        r"plain {{x}}",
        r"a\"b\"\n\t{{x}}",
        r"caf\u00e9 {{x}}",
        r"emoji \ud83d\ude00 then {{x}}",
        r"back\\slash {{x}}",
    ],
)
def test_double_quoted_value_offsets_map_to_source_columns(raw: str) -> None:
    line = f'    prompt: "{raw}"'
    column = line.index('"') + 2  # the front ends' span starts just past the opening quote
    value = json.loads(f'"{raw}"')
    offset = value.index("{{x}}")
    col = value_column(line, column, offset, len(line))
    assert line[col - 1 :].startswith("{{x}}")


def test_single_quoted_yaml_doubles_its_quotes() -> None:
    line = "    system: 'It''s ''{{q}}'' and {{oops}}'"
    value = "It's '{{q}}' and {{oops}}"
    col = value_column(line, line.index("'") + 2, value.index("{{oops}}"), len(line))
    assert line[col - 1 :].startswith("{{oops}}")


def test_one_line_text_block_and_unquoted_text() -> None:
    line = '    prompt: """Q: \\"{{q}}\\" {{x}}"""'
    col = value_column(line, line.index('"') + 1, 'Q: "{{q}}" '.index("{") + 7, len(line) + 1)
    assert line[col - 1 :].startswith("{{x}}")
    assert value_column("  q <- a ?? b", 8, 5) == 13  # a binding's text is its source text
