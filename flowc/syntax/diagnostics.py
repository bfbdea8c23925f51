"""Friendlier syntax errors: what was expected, in words, and common mistakes recognised by shape."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from lark.exceptions import UnexpectedInput

from flowc.errors import Diagnostic
from flowc.source import SourceFile, Span

_WORDS = {
    "NAME": "a name",
    "STRING": "a string",
    "LONG_STRING": 'a """text block"""',
    "SIGNED_NUMBER": "a number",
    "INT": "a whole number",
    "CONST": "true/false/null",
    "_NL": "a line break",
    "LBRACE": "'{'",
    "RBRACE": "'}'",
    "LSQB": "'['",
    "RSQB": "']'",
    "LPAR": "'('",
    "RPAR": "')'",
    "COLON": "':'",
    "COMMA": "','",
    "EQUAL": "'='",
    "DOT": "'.'",
    "EXPECT_OP": "==, !=, contains or matches",
    "CMP_OP": "a comparison",
    "OPTIONAL": "'?'",
    "$END": "the end of the file",
    "<END-OF-FILE>": "the end of the file",
}

#: The type constructors that take `[...]`.
_GENERIC = ("list", "enum", "route")


def describe_expected(expected: Iterable[str]) -> str:
    words = []
    for t in sorted(set(expected)):
        if t in _WORDS:
            words.append(_WORDS[t])
        elif t.isupper() and not t.startswith(("__", "$", "<")):
            words.append(f"'{t.lower()}'")
        elif t.startswith("__ANON"):
            continue
        else:
            words.append(t)
    words = sorted(set(words))
    if not words:
        return "check the line against docs/language.md"
    return "expected " + (", ".join(words[:-1]) + " or " + words[-1] if len(words) > 1 else words[0])


def match_common_mistake(e: UnexpectedInput, source: SourceFile) -> Diagnostic | None:
    """Recognise a few frequent slips by the text around the error."""
    line = source.line_text(e.line)
    col = e.column
    rest = line[col - 1 :] if col >= 1 else ""
    span = Span(source.path, e.line, col, e.line, col + 1)
    stripped = line.strip()
    if (
        rest.startswith("=")
        and not rest.startswith("==")
        and ":" not in line[: col - 1]
        and not stripped.startswith(("input", "type", "model", "corpus"))
    ):
        return Diagnostic(
            "syntax-error",
            "properties are written 'key: value', not 'key = value'",
            span,
            hint=f"write '{line[: col - 1].strip()}: ...'",
        )
    if rest.startswith("->") and "loop" not in line:
        return Diagnostic(
            "syntax-error",
            "inputs are bound with '<-' (the value flows into the port on the left)",
            span,
            hint="write 'port <- node.output'",
        )
    word = re.search(r"([A-Za-z_][A-Za-z0-9_]*)\s*$", line[: col - 1])
    if rest.startswith("[") and word and word.group(1) not in _GENERIC and ":" in line[: word.start()]:
        # `lst[str]`: the grammar sees a type name followed by a stray '['
        w = word.group(1)
        close = difflib.get_close_matches(w, _GENERIC, n=1, cutoff=0.5)
        return Diagnostic(
            "unknown-type",
            f"'{w}' is not a type that takes [...]; only list, enum and route do",
            Span(source.path, e.line, word.start() + 1, e.line, word.end() + 1),
            hint=f"did you mean '{close[0]}'?" if close else "write list[T], enum[a, b] or route[a, b]",
        )
    if rest.startswith("'"):
        return Diagnostic("syntax-error", "strings use double quotes", span, hint="write \"...\" instead of '...'")
    return None
