"""Friendlier syntax errors: what was expected, in words, and common mistakes recognised by shape."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from flowc.errors import Diagnostic
from flowc.source import SourceFile, Span, describe_char, is_invisible
from flowc.spec.build import FIELD_NAMES

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

#: The words that begin a statement: of a file, of a pipeline, of a block (node, test, map body).
FILE_KEYWORDS = ("import", "pipeline")
PIPELINE_KEYWORDS = ("input", "output", "type", "model", "corpus", "node", "loop", "metric", "test")
BLOCK_KEYWORDS = ("output", "demo", "do", "expect")

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
    prop = re.fullmatch(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([A-Za-z0-9_]+)", line[: col - 1])
    if prop and rest[:1] in _WORD_JOINERS:
        # `model: local/smollm2`, `k: 3.5.1`: an unquoted value that is not one bare word
        key, first = prop.group(1), prop.group(2)
        value = first + re.match(r"[A-Za-z0-9_./:@+-]*", rest).group(0)  # type: ignore[union-attr]
        start = prop.start(2) + 1
        return Diagnostic(
            "unexpected-character",
            f"'{value}' is not one bare word; a value with {rest[0]!r} is written in quotes",
            Span(source.path, e.line, start, e.line, start + len(value)),
            hint=_REFERENCE_HINT.get(key, f'write "{value}"').format(value=value),
        )
    return None


_WORD_JOINERS = "/-.:@+"
#: Hints for values of the properties that name a declaration (not a model id or a file path).
_REFERENCE_HINT = {
    "model": "a node's 'model:' names a declared model: declare it at the pipeline level "
    "(model small = \"{value}\") and write 'model: small'",
    "corpus": "a retrieve node's 'corpus:' names a declared corpus: declare it "
    "(corpus docs = \"{value}\") and write 'corpus: docs'",
}


def misspelled_keyword(e: UnexpectedToken, source: SourceFile) -> Diagnostic | None:
    """A statement whose first word is a misspelled keyword (`nod x: llm {`, `pipline p {`).

    The grammar reads an unknown first word as a property name and fails at the next token
    ("expected ':'"); the mistake is the word, so say so there, with the keyword it resembles.
    """
    tok = e.token
    expected = set(e.expected)
    choices: tuple[str, ...]
    if tok.type == "NAME" and expected <= {"PIPELINE", "IMPORT", "_NL", "$END"}:
        word, column, choices = str(tok), e.column, FILE_KEYWORDS
    else:
        before = source.line_text(e.line)[: e.column - 1]
        m = re.fullmatch(r"(\s*)([A-Za-z_][A-Za-z0-9_]*)\s+", before)
        if not m or "COLON" not in expected:
            return None
        # only 'key:' may follow a word at a pipeline's top level; a block also takes '<-' and '='
        word, column = m.group(2), len(m.group(1)) + 1
        choices = PIPELINE_KEYWORDS if expected == {"COLON"} else BLOCK_KEYWORDS
    if choices is not FILE_KEYWORDS and word in FIELD_NAMES:
        # `role x`: a property missing its ':', not a misspelled keyword
        end = column + len(word)
        return Diagnostic(
            "syntax-error",
            f"a ':' is missing after '{word}'",
            Span(source.path, e.line, end, e.line, end + 1),
            hint=f"properties are written '{word}: value'",
        )
    if word in choices:
        return None
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not close:
        return None
    return Diagnostic(
        "syntax-error",
        f"unknown statement '{word}'",
        Span(source.path, e.line, column, e.line, column + len(word)),
        hint=f"did you mean '{close[0]}'?",
    )


def invisible_character(ch: str, span: Span) -> Diagnostic | None:
    """A character that shows as a space or as nothing (no-break space, zero-width space): name it."""
    if not is_invisible(ch):
        return None
    return Diagnostic(
        "unexpected-character",
        f"invisible character {describe_char(ch)}",
        span,
        hint="delete it, or replace it with a plain space; it usually comes with text copied from a web page "
        "or a word processor",
    )


def open_brackets(text: str) -> list[int]:
    """Offsets of the brackets still open at the end of `text`, outermost first (strings and
    comments skipped): which '{' an unexpected end of file leaves open."""
    stack: list[int] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i = _skip_string(text, i)
            continue
        if c == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if c in "[{(":
            stack.append(i)
        elif c in "]})" and stack:
            stack.pop()
        i += 1
    return stack


def _skip_string(text: str, i: int) -> int:
    """The offset just past the string that starts at `i` (the end of the text if unclosed)."""
    n = len(text)
    if text.startswith('"""', i):
        j = text.find('"""', i + 3)
        return n if j < 0 else j + 3
    j = i + 1
    while j < n and text[j] not in '"\n':
        j += 2 if text[j] == "\\" else 1
    return j + 1


def too_deep(text: str, max_depth: int) -> int | None:
    """Offset where bracket nesting first exceeds `max_depth`, ignoring strings and comments."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = text.find('"""', i + 3) + 3 if text.startswith('"""', i) else i + 1
            if not text.startswith('"""', i):
                while j < n and text[j] not in '"\n':
                    j += 2 if text[j] == "\\" else 1
                j += 1
            i = j if j > i else n
            continue
        if c == "#":
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if c in "[{(":
            depth += 1
            if depth > max_depth:
                return i
        elif c in "]})":
            depth -= 1
        i += 1
    return None


def syntax_diagnostic(e: UnexpectedInput, source: SourceFile) -> Diagnostic:
    """The diagnostic for lark's error: the common mistakes by name, otherwise what was expected."""
    path = source.path
    line, col = max(e.line, 1), max(e.column, 1)
    if isinstance(e, UnexpectedCharacters):
        pos = e.pos_in_stream or 0
        ch = source.text[pos] if pos < len(source.text) else ""
        # an unclosed `"""` lexes as an empty string `""` and then a lone `"`: point at the opener
        back = 2 if source.text[max(pos - 2, 0) : pos + 1] == '"""' else 0
        if back or source.text.startswith('"""', pos):
            return Diagnostic(
                "unterminated-string",
                "this text block is never closed",
                Span(path, line, col - back, line, col - back + 3),
                hint='close it with """ on a line of its own',
            )
        if ch == '"':
            return Diagnostic(
                "unterminated-string",
                "this string is not closed on its line",
                Span(path, line, col, line, col + 1),
                hint='close it with ", or use """...""" for text over several lines',
            )
        mistake = invisible_character(ch, Span(path, line, col, line, col + 1)) or match_common_mistake(e, source)
        if mistake:
            return mistake
        return Diagnostic(
            "unexpected-character",
            f"unexpected character {ch!r}",
            Span(path, line, col, line, col + 1),
            hint=describe_expected(e.allowed) if e.allowed else None,
        )
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        last = len(source.text.splitlines()) or 1
        end_col = len(source.line_text(last)) + 1
        still_open = open_brackets(source.text)
        opener = still_open[-1] if still_open else None
        return Diagnostic(
            "unexpected-eof",
            "the file ends in the middle of a declaration",
            Span(path, last, end_col, last, end_col + 1),
            hint="a '}' is probably missing; every '{' needs its '}'",
            notes=(f"the '{source.text[opener]}' at {source.span_at(opener)} is never closed",)
            if opener is not None
            else (),
        )
    assert isinstance(e, UnexpectedToken)
    mistake = match_common_mistake(e, source) or misspelled_keyword(e, source)
    if mistake:
        return mistake
    tok = e.token
    if tok.type in ("PIPELINE", "IMPORT") and set(e.expected) <= {"$END", "<END-OF-FILE>", "_NL"}:
        one = tok.type == "PIPELINE"
        return Diagnostic(
            "syntax-error",
            "a file holds one pipeline" if one else "imports go before the pipeline",
            Span(path, line, col, line, col + len(str(tok))),
            hint="put the other pipeline in its own file and 'import' it"
            if one
            else "move this line to the top of the file",
        )
    if tok.type == "RBRACE" and set(e.expected) <= {"$END", "<END-OF-FILE>", "_NL"}:
        return Diagnostic(
            "syntax-error",
            "this '}' has no matching '{'",
            Span(path, line, col, line, col + 1),
            hint="remove it, or check the braces above: the pipeline's block already ended",
        )
    shown = "end of line" if tok.type == "_NL" else repr(str(tok))
    width = 1 if tok.type == "_NL" else max(len(str(tok)), 1)
    return Diagnostic(
        "syntax-error",
        f"unexpected {shown}",
        Span(path, line, col, line, col + width),
        hint=describe_expected(e.expected),
    )
