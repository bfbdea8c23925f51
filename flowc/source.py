"""Source files and spans: where a piece of a spec came from, and how to show it with a caret.

Stdlib only: every layer above may import this.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Span:
    """A region of a source file, 1-based lines and columns, end exclusive."""

    path: str
    line: int
    column: int
    end_line: int | None = None
    end_column: int | None = None

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class SourceFile:
    """The text of a spec file, kept so diagnostics can quote the offending line."""

    path: str
    text: str

    @classmethod
    def read(cls, path: str | Path) -> SourceFile:
        p = Path(path)
        return cls(str(path), p.read_text(encoding="utf-8"))

    def line_text(self, line: int) -> str:
        lines = self.text.splitlines()
        return lines[line - 1] if 1 <= line <= len(lines) else ""

    def span_at(self, offset: int, length: int = 1) -> Span:
        """The span of `length` characters starting at character `offset`."""
        line = self.text.count("\n", 0, offset) + 1
        start = self.text.rfind("\n", 0, offset) + 1
        col = offset - start + 1
        return Span(self.path, line, col, line, col + max(length, 1))


_ESCAPE_WIDTH = {"x": 4, "u": 6, "U": 10}
_HEX = frozenset("0123456789abcdefABCDEF")


def value_column(line: str, column: int, offset: int, end_column: int | None = None) -> int:
    """The column of character `offset` of a string value whose text starts at `column` of `line`.

    A value written in quotes on one line is not its source text character for character: in
    double quotes an escape (a backslash and `n`, `"` or `u00e9`) is one character of the value and
    several of the source; in single quotes (YAML) two quotes are one; a one-line triple-quoted
    block starts three columns later. Unquoted text maps one to one. The quoting is recognised
    around the span the front ends record for a string: from just past the opening quote to just
    before the closing one.
    """
    before = line[column - 2] if 2 <= column <= len(line) + 1 else ""
    if before in ("'", '"') and (end_column is None or line[end_column - 1 : end_column] == before):
        quote = before
    elif line.startswith('"""', column - 1):
        quote, column = '"""', column + 3
    else:
        return column + offset
    i, n = column - 1, 0
    while n < offset and i < len(line):
        if quote == "'" and line.startswith("''", i):
            i += 2
        elif quote == '"' and line[i] == "\\":
            i += _escape_width(line, i)
        elif quote == '"""' and line[i] == "\\" and line[i + 1 : i + 2] in ('"', "\\"):
            i += 2
        else:
            i += 1
        n += 1
    return i + 1 + (offset - n)


def _escape_width(line: str, i: int) -> int:
    """Source characters of the escape at `i` that make one character of the value."""
    width = _ESCAPE_WIDTH.get(line[i + 1 : i + 2], 2)
    digits = line[i + 2 : i + width]
    high_surrogate = width == 6 and len(digits) == 4 and set(digits) <= _HEX and 0xD800 <= int(digits, 16) < 0xDC00
    return 12 if high_surrogate and line.startswith("\\u", i + 6) else width  # a surrogate pair is one character


def render_excerpt(source: SourceFile | None, span: Span) -> str:
    """The source line of `span` with a gutter and a caret line under the span."""
    if source is None:
        return ""
    text = source.line_text(span.line)
    if not text and span.line > len(source.text.splitlines()):
        return ""
    width = len(str(span.line))
    gutter = " " * width
    end = span.end_column if (span.end_line in (None, span.line) and span.end_column) else len(text) + 1
    n = max(1, min(end, len(text) + 1) - span.column)
    caret = " " * (span.column - 1) + "^" * n
    return f"{span.line:>{width}} | {text.rstrip()}\n{gutter} | {caret}"


#: Unicode categories of characters that look like nothing (or like a plain space) on screen.
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cf", "Cc", "Co", "Cn"})


def describe_char(ch: str) -> str:
    """How to name a character in a message: `'$'`, or for one that shows as blank or nothing (a
    no-break or zero-width space, a control character) its code point and Unicode name."""
    if ch and unicodedata.category(ch) in _INVISIBLE and ch not in " \t\n":
        name = unicodedata.name(ch, "") or ("a control character" if unicodedata.category(ch) == "Cc" else "unnamed")
        return f"U+{ord(ch):04X} ({name})"
    return repr(ch)


def is_invisible(ch: str) -> bool:
    """Whether `ch` shows as a blank or as nothing although it is not a plain space, tab or newline."""
    return bool(ch) and unicodedata.category(ch) in _INVISIBLE and ch not in " \t\r\n"
