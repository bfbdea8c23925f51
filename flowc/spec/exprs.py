"""The small expression languages inside a spec, shared by the DSL and YAML front ends.

- bindings, the right side of `port <- ...`: a name (`question`, a pipeline input or a map item),
  a node output (`plan.query`), a literal (`"text"`, `3`, `true`), the history of an output
  (`all reflect.evidence`, a list of every value it produced so far) and a coalesce
  (`plan.query ?? question`: the latest value of the first alternative that has produced one);
- conditions, after `while` in loops: comparisons of bindings and literals with `== != < <= > >=`,
  `contains`, joined by `and` / `or`, negated with `not`.

Each parsed piece keeps its character offset so diagnostics can point inside the expression.
"""

from __future__ import annotations

import json
import re
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


_TOKENS = re.compile(
    r"""\s*(?:
      (?P<str>"(?:[^"\\\n]|\\.)*")
    | (?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    | (?P<ref>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
    | (?P<op>\?\?|==|!=|<=|>=|<|>|\(|\))
    )""",
    re.VERBOSE,
)
_KEYWORDS = {"all", "and", "or", "not", "contains", "true", "false", "null"}


def _tokenize(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _TOKENS.match(text, pos)
        if not m or m.end() == pos:
            off = pos + len(text[pos:]) - len(text[pos:].lstrip())
            ch = text[off]
            if ch == '"':
                raise ExprSyntaxError("unterminated string in expression", off)
            raise ExprSyntaxError(f"unexpected character {ch!r} in expression", off)
        kind = m.lastgroup or "op"
        val, start = m.group(kind), m.start(kind)
        if kind == "ref" and val in _KEYWORDS:
            kind = "kw"
        out.append((kind, val, start))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise ExprSyntaxError("expression ends early", len(self.text))
        self.i += 1
        return tok

    def at(self, *vals: str) -> bool:
        tok = self.peek()
        return tok is not None and tok[1] in vals

    def done(self) -> None:
        tok = self.peek()
        if tok is not None:
            raise ExprSyntaxError(f"unexpected {tok[1]!r}", tok[2])

    # binding := operand ('??' operand)*
    def binding(self) -> Expr:
        first = self.operand()
        opts = [first]
        while self.at("??"):
            self.take()
            opts.append(self.operand())
        return first if len(opts) == 1 else Coalesce(first.offset, tuple(opts))

    def operand(self) -> Expr:
        kind, val, off = self.take()
        if kind == "str":
            try:
                return Lit(off, json.loads(val))
            except json.JSONDecodeError as e:
                raise ExprSyntaxError(f"bad string literal: {e.msg}", off) from e
        if kind == "num":
            return Lit(off, float(val) if any(c in val for c in ".eE") else int(val))
        if kind == "kw" and val in ("true", "false", "null"):
            return Lit(off, {"true": True, "false": False, "null": None}[val])
        if kind == "kw" and val == "all":
            ref = self.operand()
            if not isinstance(ref, Ref) or ref.node is None:
                raise ExprSyntaxError("'all' takes a node output, as in 'all reflect.evidence'", ref.offset)
            return History(off, ref)
        if kind == "ref":
            node, _, port = val.rpartition(".")
            return Ref(off, node or None, port)
        raise ExprSyntaxError(f"expected a name, a node output or a literal, found {val!r}", off)

    # cond := conj ('or' conj)* ; conj := neg ('and' neg)* ; neg := 'not' neg | atom
    def cond(self) -> Expr:
        items = [self.conj()]
        while self.at("or"):
            self.take()
            items.append(self.conj())
        return items[0] if len(items) == 1 else BoolOp(items[0].offset, "or", tuple(items))

    def conj(self) -> Expr:
        items = [self.neg()]
        while self.at("and"):
            self.take()
            items.append(self.neg())
        return items[0] if len(items) == 1 else BoolOp(items[0].offset, "and", tuple(items))

    def neg(self) -> Expr:
        if self.at("not"):
            off = self.take()[2]
            return Not(off, self.neg())
        if self.at("("):
            self.take()
            inner = self.cond()
            if not self.at(")"):
                tok = self.peek()
                raise ExprSyntaxError("expected ')'", tok[2] if tok else len(self.text))
            self.take()
            return inner
        left = self.binding()
        if self.at("==", "!=", "<", "<=", ">", ">=", "contains"):
            op = self.take()[1]
            return Compare(left.offset, left, op, self.binding())
        return left


def parse_binding(text: str) -> Expr:
    """Read the right side of `port <- ...`."""
    p = _Parser(text)
    if p.peek() is None:
        raise ExprSyntaxError("empty binding: write a name, a node output or a literal", 0)
    e = p.binding()
    p.done()
    return e


def parse_condition(text: str) -> Expr:
    """Read a loop condition."""
    p = _Parser(text)
    if p.peek() is None:
        raise ExprSyntaxError("empty condition", 0)
    e = p.cond()
    p.done()
    return e


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
