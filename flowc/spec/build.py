"""From plain data plus a span table to a validated Pipeline, or every problem found, located.

Both front ends (the DSL transformer and the YAML loader) produce the same thing — nested dicts
and lists shaped like `Pipeline.dump()`, and a table from each value's path to its Span — and
meet here, so a spec gets the same checks and the same messages whichever way it was written.
"""

from __future__ import annotations

import difflib
import json
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from flowc.errors import Diagnostic, ErrorCode, SourceFile, SpecErrors
from flowc.source import Span, value_column
from flowc.spec import models as m

SpanTable = dict[tuple[str | int, ...], Span]

_CUSTOM_CODES = {"invalid-type-expr", "invalid-binding", "reserved-name"}


def _field_names() -> list[str]:
    names: set[str] = set()
    for obj in vars(m).values():
        if isinstance(obj, type) and issubclass(obj, BaseModel):
            for name, f in obj.model_fields.items():
                names.add(f.alias or name)
    return sorted(names)


FIELD_NAMES = _field_names()


def did_you_mean(word: str, choices: list[str] | set[str] | tuple[str, ...]) -> str | None:
    """The closest of `choices` to `word`, phrased as a hint, or None."""
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def data_path(data: Any, loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """Map a pydantic error location onto the data's path, skipping union tags and the like."""
    out: list[str | int] = []
    cur = data
    for part in loc:
        in_dict = isinstance(cur, dict) and part in cur
        if in_dict or (isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)):
            out.append(part)
            cur = cur[part]
        elif isinstance(cur, dict) and isinstance(part, str) and part.endswith("_") and part[:-1] in cur:
            out.append(part[:-1])  # from_ / while_ are written from / while
            cur = cur[part[:-1]]
    return tuple(out)


def build_pipeline(data: Any, spans: SpanTable, source: SourceFile | None) -> m.Pipeline:
    """Validate `data` into a Pipeline; raise SpecErrors listing every problem with its place."""
    path = source.path if source else None
    sources = {source.path: source} if source else {}
    if not isinstance(data, dict):
        span = spans.get(()) or (Span(path, 1, 1) if path else None)
        raise SpecErrors(
            [
                Diagnostic(
                    "yaml-not-mapping",
                    "a spec is a mapping with a 'pipeline' key at the top",
                    span,
                    hint="start the file with 'pipeline: <name>'",
                )
            ],
            sources,
        )
    try:
        spec = m.Pipeline.model_validate(data)
    except ValidationError as exc:
        diags = [_diagnostic(err, data, spans, source) for err in exc.errors()]
        raise SpecErrors(_dedupe(diags), sources) from None
    return spec.with_source(path, spans, source.text if source else "")


def _dedupe(diags: list[Diagnostic]) -> list[Diagnostic]:
    seen: set[tuple[str, str, str]] = set()
    out = []
    for d in diags:
        key = (d.code, d.message, str(d.span))
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _span(spans: SpanTable, p: tuple[str | int, ...], path: str | None, key: bool = False) -> Span | None:
    if key and (*p, "@key") in spans:
        return spans[(*p, "@key")]
    while p and p not in spans:
        p = p[:-1]
    return spans.get(p) or (Span(path, 1, 1) if path else None)


#: The word for one entry of each section, for messages ("node 'plan'", "model 'small'").
_SECTION_WORD = {
    "imports": "import",
    "types": "type",
    "inputs": "input",
    "outputs": "output",
    "models": "model",
    "corpora": "corpus",
    "nodes": "node",
    "loops": "loop",
    "metrics": "metric",
    "tests": "test",
}
_SECTION_MODEL: dict[str, type[BaseModel]] = {
    "inputs": m.InputDecl,
    "outputs": m.OutputDecl,
    "models": m.ModelDecl,
    "corpora": m.CorpusDecl,
    "loops": m.LoopDecl,
    "metrics": m.MetricDecl,
    "tests": m.TestCase,
}
_KIND_MODEL: dict[str, type[BaseModel]] = {
    "llm": m.LLMNode,
    "retrieve": m.RetrieveNode,
    "tool": m.ToolNode,
    "subflow": m.SubflowNode,
    "map": m.MapNode,
}
#: How to add a required field, in the DSL's words (the YAML key is the field's name).
_ADD_FIELD = {
    "body": "add a body: 'do: llm { ... }' (YAML: 'body:')",
    "prompt": 'add \'prompt: """..."""\' with {{placeholders}} for its inputs',
    "over": "add 'over <- <a list>'",
    "output": "add 'output = <pipeline output>'",
    "target": "add 'target = <dataset field>'",
    "source": "bind it: 'output <name>: <type> <- <node>.<output>'",
}


def _owner(p: tuple[str | int, ...]) -> tuple[str, tuple[str | int, ...]]:
    """Split a data path into the thing it belongs to, in words, and the rest of the path."""
    if len(p) >= 2 and p[0] in _SECTION_WORD:
        desc, rest = f"{_SECTION_WORD[str(p[0])]} '{p[1]}'", p[2:]
        if p[0] == "nodes" and rest[:1] == ("body",):
            desc, rest = f"the body of {desc}", rest[1:]
        return desc, rest
    return "the pipeline", p


def _where(p: tuple[str | int, ...]) -> str:
    """`'temperature' of model 'small'`, `node 'plan'`, `'nodes' of the pipeline`."""
    desc, rest = _owner(p)
    if p[:1] == ("nodes",) and len(rest) == 2 and rest[0] in ("inputs", "outputs"):
        return f"{str(rest[0])[:-1]} '{rest[1]}' of {desc}"
    return f"'{'.'.join(str(x) for x in rest)}' of {desc}" if rest else desc


def _fields_at(data: Any, p: tuple[str | int, ...]) -> list[str] | None:
    """The field names the spec model at data path `p` accepts (for did-you-mean), if known."""
    cls: type[BaseModel] | None = None
    if p == ():
        cls = m.Pipeline
    elif len(p) == 2 and p[0] in _SECTION_MODEL:
        cls = _SECTION_MODEL[str(p[0])]
    elif p[0] == "nodes" and (len(p) == 2 or (len(p) == 3 and p[2] == "body")):
        cls = _KIND_MODEL.get(str(_value_at(data, (*p, "kind"))))
    elif p[0] == "tests" and len(p) == 4 and p[2] == "expect":
        cls = m.Expectation
    if cls is None:
        return None
    return [f.alias or n for n, f in cls.model_fields.items() if n != "kind"]


def _value_at(data: Any, p: tuple[str | int, ...]) -> Any:
    for part in p:
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _diagnostic(err: Any, data: Any, spans: SpanTable, source: SourceFile | None) -> Diagnostic:
    path = source.path if source is not None else None
    loc = cast(tuple[str | int, ...], tuple(err["loc"]))
    p = data_path(data, loc)
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if etype == "extra_forbidden":
        return _unknown_field(str(loc[-1]), data, p, spans, path)
    if etype == "missing":
        name = str(loc[-1]).rstrip("_")
        return Diagnostic(
            "missing-field",
            f"{_where(p)} needs {'an' if name[0] in 'aeiou' else 'a'} '{name}'",
            _span(spans, p, path, key=True),
            hint=_ADD_FIELD.get(name, f"add '{name}: ...'"),
        )
    if etype == "union_tag_not_found":
        return Diagnostic(
            "missing-field",
            f"{_where(p)} needs a 'kind'",
            _span(spans, p, path, key=True),
            hint=f"use one of: {', '.join(m.NODE_KINDS)}",
        )
    if etype == "union_tag_invalid":
        tag = str(ctx.get("tag", ""))
        allowed = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",") if t.strip()]
        allowed = allowed or list(m.NODE_KINDS)
        if tag in m.NODE_KINDS:  # a real kind where it is not allowed: a map inside a map
            return Diagnostic(
                "invalid-value",
                f"{_where(p)} cannot be a '{tag}' node",
                _span(spans, (*p, "kind"), path),
                hint=f"use one of: {', '.join(allowed)}; to nest maps, put the inner map in a subflow",
            )
        return Diagnostic(
            "invalid-value",
            f"unknown node kind '{tag}' in {_where(p)}",
            _span(spans, (*p, "kind"), path),
            hint=did_you_mean(tag, allowed) or f"use one of: {', '.join(allowed)}",
        )
    if etype in _CUSTOM_CODES:
        code = cast(ErrorCode, etype)
        offset = int(ctx.get("offset", 0))
        span = _span(spans, p, path)
        # Point inside the value only when it sits on one line and the offset stays inside it: a
        # YAML scalar folded over several lines no longer matches its text column for column.
        one_line = span is not None and span.end_line in (None, span.line)
        if span is not None and offset and p in spans and one_line:
            line = source.line_text(span.line) if source is not None else ""
            col = value_column(line, span.column, offset, span.end_column)
            if span.end_column is None or col <= span.end_column:
                span = Span(span.path, span.line, col, span.line, col + 1)
        if code == "reserved-name":
            name = str(ctx.get("name", ""))
            span = _span(spans, (*p, name), path, key=True)
            return Diagnostic(code, err["msg"], span, hint=f"rename '{name}', e.g. '{name}_'")
        if code == "invalid-type-expr":
            hint = "types: str, int, float, bool, Doc, list[T], enum[a, b], {field: T}, T?"
        elif '"\'"' in err["msg"]:
            hint = 'strings in expressions use double quotes: "text"'
        elif p[-1:] == ("while",):
            hint = 'conditions: plan.next == "search", n < 3, not done, a and (b or c)'
        else:
            hint = 'bindings: name, node.port, "text", 3, all node.port, a ?? b'
        return Diagnostic(code, f"{_where(p)}: {err['msg']}", span, hint=hint)
    if etype == "string_pattern_mismatch" or (etype == "string_type" and loc[-1:] == ("[key]",)):
        # a bad name as a key (`nodes: {3x: ...}`) points at the key, a bad name as a value at the value
        return Diagnostic(
            "invalid-value",
            f"'{err.get('input')}' is not a valid name ({_where(p)})",
            _span(spans, p, path, key=loc[-1:] == ("[key]",)),
            hint="names are letters, digits and '_', not starting with a digit",
        )
    message, value_hint = _value_problem(err, _where(p))
    return Diagnostic("invalid-value", message, _span(spans, p, path), hint=value_hint)


def _unknown_field(name: str, data: Any, p: tuple[str | int, ...], spans: SpanTable, path: str | None) -> Diagnostic:
    """A field the model at that place does not have; the hint looks among the fields it does have."""
    container = p[:-1] if p and p[-1] == name else p
    fields = _fields_at(data, container)
    if container[:1] == ("nodes",) and name in ("outputs", "demos") and fields is not None:
        # written `output x: T` / `demo {...}` in a node whose kind has fixed outputs or no demos
        what = "declares its outputs" if name == "outputs" else "takes demos"
        kind = _value_at(data, (*container, "kind"))
        return Diagnostic(
            "unknown-field",
            f"{_where(container)} is a {kind} node; only llm{' and tool' if name == 'outputs' else ''} nodes "
            f"{'declare outputs' if name == 'outputs' else 'take demos'}",
            _span(spans, p, path, key=True),
            hint="a retrieve node gives 'docs', a subflow its flow's outputs, a map its body's outputs as lists"
            if name == "outputs"
            else f"remove the demos, or make the node an llm node (only an llm node {what})",
        )
    hint = did_you_mean(name, fields if fields is not None else FIELD_NAMES)
    if hint is None and container[:1] == ("nodes",) and fields is not None and "inputs" in fields:
        hint = f"to bind an input, write '{name} <- <source>'; properties here: {', '.join(fields)}"
    elif hint is None and fields:
        hint = f"remove it; fields here: {', '.join(fields)}"
    return Diagnostic(
        "unknown-field",
        f"unknown field '{name}' in {_where(container)}",
        _span(spans, p, path, key=True),
        hint=hint or "remove it",
    )


_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}
_KIND_OF_VALUE = {
    "int_parsing": ("a whole number", "write a whole number, e.g. 3"),
    "int_type": ("a whole number", "write a whole number, e.g. 3"),
    "int_from_float": ("a whole number", "write a whole number, e.g. 3"),
    "float_parsing": ("a number", "write a number, e.g. 0.5"),
    "float_type": ("a number", "write a number, e.g. 0.5"),
    "bool_parsing": ("true or false", "write true or false"),
    "bool_type": ("true or false", "write true or false"),
    "string_type": ("text", 'write it in double quotes: "..."'),
    "dict_type": ("a mapping of name: value", "write {name: value, ...}, not a list or a single value"),
    "list_type": ("a list", "write [a, b, ...]"),
    "model_type": ("a mapping of its fields", "write {field: value, ...}, e.g. question: {type: str}"),
    "model_attributes_type": ("a mapping of its fields", "write {field: value, ...}, e.g. kind: llm, prompt: ..."),
}


def _value_problem(err: Any, where: str) -> tuple[str, str | None]:
    """A plain-words message and hint for pydantic's value errors (bounds, types, choices)."""
    etype, ctx, value = err["type"], err.get("ctx") or {}, err.get("input")
    shown = (
        repr(value)
        if isinstance(value, str)
        else json.dumps(value)
        if value is None or isinstance(value, bool)
        else str(value)
    )
    if etype in _BOUNDS:
        key, words = _BOUNDS[etype]
        bound = ctx.get(key)
        bound = int(bound) if isinstance(bound, float) and bound.is_integer() else bound
        return f"{where} must be {words} {bound}, not {shown}", f"use a value {words} {bound}"
    if etype in _KIND_OF_VALUE:
        what, hint = _KIND_OF_VALUE[etype]
        return f"{where} must be {what}, not {shown}", hint
    if etype == "literal_error":
        return f"{where} cannot be {shown}", f"expected {ctx.get('expected')}"
    if etype in ("string_too_short", "too_short"):
        return f"{where} cannot be empty", "give it a value"
    return f"{where}: {err['msg']}", _value_hint(err)


def _value_hint(err: Any) -> str | None:
    ctx = err.get("ctx") or {}
    if isinstance(ctx.get("hint"), str):  # a validator's own remedy
        return str(ctx["hint"])
    if "expected" in ctx:
        return f"expected {ctx['expected']}"
    return None
