"""The type language of ports: `str`, `int`, `float`, `bool`, `Doc`, `list[T]`, `enum[a, b]`,
`route[node, node]`, records `{name: T, ...}`, optional `T?`, and named types declared in the spec.

Types are written as text in both the DSL and YAML; `parse_type` reads that text and `str(t)` prints
it back in canonical form, so the text form is also the canonical dump.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

PRIMITIVES = ("str", "int", "float", "bool", "any")
#: The record type of a retrieved passage.
DOC_FIELDS: tuple[tuple[str, str], ...] = (("id", "str"), ("title", "str"), ("text", "str"), ("score", "float"))


class TypeSyntaxError(ValueError):
    """A malformed type expression; `offset` is the character where reading failed."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


@dataclass(frozen=True)
class TypeExpr:
    def __str__(self) -> str:  # pragma: no cover - every subclass overrides
        raise NotImplementedError


@dataclass(frozen=True)
class Prim(TypeExpr):
    name: str

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Named(TypeExpr):
    """A reference to a `type` declared in the spec, or the builtin `Doc`."""

    name: str
    offset: int = 0

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Named) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Named", self.name))


@dataclass(frozen=True)
class ListT(TypeExpr):
    item: TypeExpr

    def __str__(self) -> str:
        return f"list[{self.item}]"


@dataclass(frozen=True)
class EnumT(TypeExpr):
    values: tuple[str, ...]
    route: bool = False  # a router's choice: the values name nodes

    def __str__(self) -> str:
        word = "route" if self.route else "enum"
        return f"{word}[{', '.join(_show_word(v) for v in self.values)}]"


@dataclass(frozen=True)
class RecordT(TypeExpr):
    fields: tuple[tuple[str, TypeExpr], ...]

    def __str__(self) -> str:
        if self == DOC_RECORD:
            return "Doc"
        return "{" + ", ".join(f"{k}: {v}" for k, v in self.fields) + "}"

    def field(self, name: str) -> TypeExpr | None:
        return next((t for k, t in self.fields if k == name), None)


@dataclass(frozen=True)
class OptionalT(TypeExpr):
    inner: TypeExpr

    def __str__(self) -> str:
        return f"{self.inner}?"


def non_optional(t: TypeExpr) -> TypeExpr:
    """`t` without its `?`: the type a present value has."""
    return t.inner if isinstance(t, OptionalT) else t


STR, INT, FLOAT, BOOL, ANY = (Prim(n) for n in PRIMITIVES)
DOC = Named("Doc")
DOC_RECORD = RecordT(tuple((k, Prim(v)) for k, v in DOC_FIELDS))

_TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_\-]*)|(?P<str>\"(?:[^\"\\]|\\.)*\")|(?P<punct>[\[\]{},:?]))")


_BARE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _unquote(token: str) -> str:
    """The text of a quoted enum value: JSON escapes (what `_show_word` writes), else `\\x` → `x`."""
    try:
        value = json.loads(token)
    except ValueError:
        return re.sub(r"\\(.)", r"\1", token[1:-1], flags=re.S)
    return value if isinstance(value, str) else token[1:-1]


def _show_word(v: str) -> str:
    # Bare only when the `.flow` grammar reads it as one NAME (no '-'): `enum[a, "b-c"]`.
    return v if _BARE.fullmatch(v) else json.dumps(v, ensure_ascii=False)


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            m = _TOKEN.match(text, pos)
            if not m:
                off = len(text) - len(text[pos:].lstrip())
                raise TypeSyntaxError(f"unexpected character {text[off]!r} in type", off)
            kind = m.lastgroup or "punct"
            self.tokens.append((kind, m.group(kind), m.start(kind)))
            pos = m.end()
        self.i = 0

    def peek(self) -> tuple[str, str, int] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self, expect: str | None = None) -> tuple[str, str, int]:
        tok = self.peek()
        if tok is None:
            raise TypeSyntaxError(f"type ends early{f', expected {expect!r}' if expect else ''}", len(self.text))
        if expect is not None and tok[1] != expect:
            raise TypeSyntaxError(f"expected {expect!r} in type, found {tok[1]!r}", tok[2])
        self.i += 1
        return tok


def parse_type(text: str) -> TypeExpr:
    """Read a type expression; raises TypeSyntaxError with the offset of the problem."""
    r = _Reader(text)
    t = _parse(r)
    extra = r.peek()
    if extra is not None:
        raise TypeSyntaxError(f"unexpected {extra[1]!r} after the type", extra[2])
    return t


def _parse(r: _Reader) -> TypeExpr:
    kind, val, off = r.next()
    t: TypeExpr
    if val == "{":
        fields: list[tuple[str, TypeExpr]] = []
        if r.peek() and r.peek()[1] == "}":  # type: ignore[index]
            raise TypeSyntaxError("a record type needs at least one field", off)
        while True:
            fk, fname, foff = r.next()
            if fk != "word":
                raise TypeSyntaxError(f"expected a field name, found {fname!r}", foff)
            if any(n == fname for n, _ in fields):
                raise TypeSyntaxError(f"field '{fname}' appears twice in the record", foff)
            r.next(":")
            fields.append((fname, _parse(r)))
            sep = r.next()
            if sep[1] == "}":
                break
            if sep[1] != ",":
                raise TypeSyntaxError(f"expected ',' or '}}' in record type, found {sep[1]!r}", sep[2])
        t = RecordT(tuple(fields))
    elif kind != "word":
        raise TypeSyntaxError(f"expected a type, found {val!r}", off)
    elif val == "list":
        r.next("[")
        t = ListT(_parse(r))
        r.next("]")
    elif val in ("enum", "route"):
        r.next("[")
        values: list[str] = []
        while True:
            vk, v, voff = r.next()
            if vk == "str":
                v = _unquote(v)
            elif vk != "word":
                raise TypeSyntaxError(f"expected an {val} value, found {v!r}", voff)
            if v in values:
                raise TypeSyntaxError(f"{val} value '{v}' appears twice", voff)
            values.append(v)
            sep = r.next()
            if sep[1] == "]":
                break
            if sep[1] != ",":
                raise TypeSyntaxError(f"expected ',' or ']' in {val}, found {sep[1]!r}", sep[2])
        t = EnumT(tuple(values), route=val == "route")
    elif val in PRIMITIVES:
        t = Prim(val)
    else:
        t = Named(val, off)
    while r.peek() is not None and r.peek()[1] == "?":  # type: ignore[index]
        r.next()
        if not isinstance(t, OptionalT):
            t = OptionalT(t)
    return t


def is_assignable(src: TypeExpr, dst: TypeExpr) -> bool:
    """Can a value of type `src` flow into a port of type `dst`? (Named types resolved first.)"""
    if src == dst or dst == ANY or src == ANY:
        return True
    if isinstance(dst, OptionalT):
        inner = non_optional(src)
        return is_assignable(inner, dst.inner)
    if isinstance(src, OptionalT):
        return False
    if isinstance(src, Prim) and isinstance(dst, Prim):
        return src.name == "int" and dst.name == "float"
    if isinstance(src, EnumT):
        if dst == STR:
            return True
        return isinstance(dst, EnumT) and set(src.values) <= set(dst.values)
    if isinstance(src, ListT) and isinstance(dst, ListT):
        return is_assignable(src.item, dst.item)
    if isinstance(src, RecordT) and isinstance(dst, RecordT):
        for name, want in dst.fields:
            have = src.field(name)
            if have is None and not isinstance(want, OptionalT):
                return False
            if have is not None and not is_assignable(have, want):
                return False
        return True
    return False


def resolve(t: TypeExpr, named: dict[str, TypeExpr]) -> TypeExpr:
    """Replace named types by their definitions (Doc is builtin); unknown names stay Named."""
    if isinstance(t, Named):
        if t.name == "Doc":
            return DOC_RECORD
        if t.name in named:
            return resolve(named[t.name], {k: v for k, v in named.items() if k != t.name})
        return t
    if isinstance(t, ListT):
        return ListT(resolve(t.item, named))
    if isinstance(t, OptionalT):
        return OptionalT(resolve(t.inner, named))
    if isinstance(t, RecordT):
        return RecordT(tuple((k, resolve(v, named)) for k, v in t.fields))
    return t


def named_refs(t: TypeExpr) -> list[Named]:
    """Every named type mentioned in `t` (for unknown-type checks)."""
    if isinstance(t, Named):
        return [t]
    if isinstance(t, ListT):
        return named_refs(t.item)
    if isinstance(t, OptionalT):
        return named_refs(t.inner)
    if isinstance(t, RecordT):
        return [n for _, v in t.fields for n in named_refs(v)]
    return []


def coerce_input(value: object, t: TypeExpr) -> object:
    """Check (strictly) that a pipeline input fits its type; text from a command line is parsed
    for numbers, booleans and JSON lists/records. Raises ValueError saying what is wrong."""
    import json

    if isinstance(t, OptionalT):
        return None if value is None else coerce_input(value, t.inner)
    if t == ANY:
        return value
    if isinstance(value, str) and not (t == STR or isinstance(t, EnumT)):
        text = value
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError(f"cannot read {text[:40]!r} as {t}") from None
    if t == STR:
        if not isinstance(value, str):
            raise ValueError(f"expected text, got {type(value).__name__}")
        return value
    if t == INT:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {value!r}")
        return value
    if t == FLOAT:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {value!r}")
        return float(value)
    if t == BOOL:
        if not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value
    if isinstance(t, EnumT):
        if value not in t.values:
            raise ValueError(f"expected one of {', '.join(t.values)}, got {value!r}")
        return value
    if isinstance(t, ListT):
        if not isinstance(value, list):
            raise ValueError(f"expected a list, got {type(value).__name__}")
        return [coerce_input(x, t.item) for x in value]
    if isinstance(t, RecordT):
        if not isinstance(value, dict):
            raise ValueError(f"expected a record, got {type(value).__name__}")
        return {k: coerce_input(value.get(k), ft) for k, ft in t.fields}
    return value
