"""The small expression languages inside a spec, shared by the DSL and YAML front ends.

- bindings, the right side of `port <- ...`: a name (`question`, a pipeline input or a map item),
  a node output (`plan.query`), a literal (`"text"`, `3`, `true`), the history of an output
  (`all reflect.evidence`, a list of every value it produced so far) and a coalesce
  (`plan.query ?? question`: the latest value of the first alternative that has produced one);
- conditions, after `while` in loops: comparisons of bindings and literals with `== != < <= > >=`,
  `contains`, joined by `and` / `or`, negated with `not`.

Each parsed piece keeps its character offset so diagnostics can point inside the expression.
This module holds the syntax tree; the text is read by the `.flow` grammar's own `binding` and
`cond` rules (flowc/syntax/exprs.py, installed with `register_reader`), so both front ends share
one definition of the language.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class ExprSyntaxError(ValueError):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class Expr:
    offset: int = field(default=0, compare=False)


@dataclass(frozen=True)
class Ref(Expr):
    """`name` (node is None) or `node.port`."""

    node: str | None = None
    port: str = ""

    def __str__(self) -> str:
        return f"{self.node}.{self.port}" if self.node else self.port


@dataclass(frozen=True)
class Lit(Expr):
    value: Any = None

    def __str__(self) -> str:
        return json.dumps(self.value, ensure_ascii=False)


@dataclass(frozen=True)
class History(Expr):
    """`all node.port`: every value the output produced in this run, oldest first."""

    ref: Ref = field(default_factory=Ref)

    def __str__(self) -> str:
        return f"all {self.ref}"


@dataclass(frozen=True)
class Coalesce(Expr):
    options: tuple[Expr, ...] = ()

    def __str__(self) -> str:
        return " ?? ".join(str(o) for o in self.options)


@dataclass(frozen=True)
class Compare(Expr):
    left: Expr = field(default_factory=Lit)
    op: str = "=="
    right: Expr = field(default_factory=Lit)

    def __str__(self) -> str:
        return f"{self.left} {self.op} {self.right}"


@dataclass(frozen=True)
class BoolOp(Expr):
    op: str = "and"
    items: tuple[Expr, ...] = ()

    def __str__(self) -> str:
        return f" {self.op} ".join(_paren(i, self.op) for i in self.items)


@dataclass(frozen=True)
class Not(Expr):
    item: Expr = field(default_factory=Lit)

    def __str__(self) -> str:
        inner = str(self.item)
        return f"not ({inner})" if isinstance(self.item, BoolOp) else f"not {inner}"


def _paren(e: Expr, parent_op: str) -> str:
    return f"({e})" if isinstance(e, BoolOp) and e.op != parent_op else str(e)


#: Reads `text` by one of the grammar's rules ("binding" or "cond") into an Expr; raises
#: ExprSyntaxError. Set by flowc.syntax.exprs (see register_reader).
ExprReader = Callable[[str, str], Expr]
_reader: ExprReader | None = None


def register_reader(reader: ExprReader) -> None:
    """Install the parser of bindings and conditions.

    The expression language is defined once, by the `binding` and `cond` rules of the `.flow`
    grammar (flowc/grammars/flow.lark). The parser that uses it lives in the syntax layer, which sits
    above this one (it builds spec models), so the spec layer cannot import it: the syntax layer
    registers it here when it is imported, which `import flowc` always does.
    """
    global _reader
    _reader = reader


def _read(text: str, rule: str) -> Expr:
    if _reader is None:  # only when flowc.spec is used without the package (never through `import flowc`)
        raise RuntimeError("no expression reader registered: import flowc.syntax first")
    return _reader(text, rule)


def parse_binding(text: str) -> Expr:
    """Read the right side of `port <- ...`."""
    return _read(text, "binding")


def parse_condition(text: str) -> Expr:
    """Read a loop condition."""
    return _read(text, "cond")


def refs(e: Expr) -> list[Ref]:
    """Every name or node output an expression reads, in order."""
    if isinstance(e, Ref):
        return [e]
    if isinstance(e, History):
        return [e.ref]
    if isinstance(e, Coalesce):
        return [r for o in e.options for r in refs(o)]
    if isinstance(e, Compare):
        return refs(e.left) + refs(e.right)
    if isinstance(e, BoolOp):
        return [r for i in e.items for r in refs(i)]
    if isinstance(e, Not):
        return refs(e.item)
    return []
