"""Where a spec's text has comments, so that `flowc fmt --write` never drops one silently.

The canonical printer works from the parsed spec, which keeps no comments. Until it can carry them
over, `fmt` refuses to rewrite a file that has any (see `cli/spec_commands.py`). `.flow` comments
are found by lark's own lexer (the grammar's ignored COMMENT terminal, reported through a lexer
callback), YAML comments by PyYAML's scanner (a `#` outside every token), so a `#` inside a string
or a block-scalar prompt is never mistaken for one.
"""

from __future__ import annotations

from contextvars import ContextVar
from functools import cache

import yaml
from lark import Lark, Token

__all__ = ["flow_comment_lines", "yaml_comment_lines"]

_found: ContextVar[list[int] | None] = ContextVar("flowc_comments", default=None)


def _collect(token: Token) -> Token:
    """A COMMENT token, or a line break (which swallows the comment-only lines after it)."""
    lines = _found.get()
    if lines is not None and token.line is not None:
        for i, line in enumerate(str(token).split("\n")):
            if line.lstrip().startswith("#"):
                lines.append(token.line + i)
    return token


@cache
def _lexing_parser() -> Lark:
    return Lark.open_from_package(
        "flowc", "flow.lark", ("grammars",), parser="lalr", lexer_callbacks={"COMMENT": _collect, "_NL": _collect}
    )


def flow_comment_lines(text: str) -> list[int]:
    """1-based lines of the comments in a valid `.flow` text."""
    lines: list[int] = []
    reset = _found.set(lines)
    try:
        _lexing_parser().parse(text)
    finally:
        _found.reset(reset)
    return sorted(set(lines))


def yaml_comment_lines(text: str) -> list[int]:
    """1-based lines of the comments in a valid YAML text."""
    covered: list[tuple[int, int]] = [(t.start_mark.index, t.end_mark.index) for t in yaml.scan(text)]
    lines: set[int] = set()
    start = 0
    for begin, end in [*sorted(covered), (len(text), len(text))]:
        at = text.find("#", start, begin)
        while at >= 0:  # a comment runs to the end of its line; the next may start on a later one
            lines.add(text.count("\n", 0, at) + 1)
            eol = text.find("\n", at)
            at = -1 if eol < 0 else text.find("#", eol, begin)
        start = max(start, end)
    return sorted(lines)
