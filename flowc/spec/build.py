"""From plain data plus a span table to a validated Pipeline, or every problem found, located.

Both front ends (the DSL transformer and the YAML loader) produce the same thing — nested dicts
and lists shaped like `Pipeline.dump()`, and a table from each value's path to its Span — and
meet here, so a spec gets the same checks and the same messages whichever way it was written.
"""

from __future__ import annotations

import difflib
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from flowc.errors import Diagnostic, ErrorCode, SourceFile, SpecErrors
from flowc.source import Span
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
        diags = [_diagnostic(err, data, spans, path) for err in exc.errors()]
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


def _diagnostic(err: Any, data: Any, spans: SpanTable, path: str | None) -> Diagnostic:
    loc = cast(tuple[str | int, ...], tuple(err["loc"]))
    p = data_path(data, loc)
    where = ".".join(str(x) for x in p) or "the top level"
    etype = err["type"]
    ctx = err.get("ctx") or {}
    if etype == "extra_forbidden":
        name = str(loc[-1])
        return Diagnostic(
            "unknown-field",
            f"unknown field '{name}' in {'.'.join(str(x) for x in p[:-1]) or 'the pipeline'}",
            _span(spans, p, path, key=True),
            hint=did_you_mean(name, FIELD_NAMES) or "remove it",
        )
    if etype == "missing":
        name = str(loc[-1]).rstrip("_")
        return Diagnostic(
            "missing-field",
            f"{where} needs a '{name}'",
            _span(spans, p, path, key=True),
            hint=f"add '{name}' to {where}",
        )
    if etype in ("union_tag_invalid", "union_tag_not_found"):
        tag = ctx.get("tag", "")
        return Diagnostic(
            "invalid-value",
            f"unknown node kind '{tag}' in {where}" if tag else f"{where} needs a 'kind'",
            _span(spans, (*p, "kind"), path),
            hint=did_you_mean(str(tag), m.NODE_KINDS) or f"use one of: {', '.join(m.NODE_KINDS)}",
        )
    if etype in _CUSTOM_CODES:
        code = cast(ErrorCode, etype)
        offset = int(ctx.get("offset", 0))
        span = _span(spans, p, path)
        if span is not None and offset and p in spans:
            span = Span(span.path, span.line, span.column + offset, span.line, span.column + offset + 1)
        if code == "reserved-name":
            name = str(ctx.get("name", ""))
            span = _span(spans, (*p, name), path, key=True)
            return Diagnostic(code, err["msg"], span, hint=f"rename '{name}', e.g. '{name}_'")
        hint = (
            "types: str, int, float, bool, Doc, list[T], enum[a, b], {field: T}, T?"
            if code == "invalid-type-expr"
            else 'bindings: name, node.port, "text", 3, all node.port, a ?? b'
        )
        return Diagnostic(code, f"{where}: {err['msg']}", span, hint=hint)
    if etype == "string_pattern_mismatch":
        return Diagnostic(
            "invalid-value",
            f"{where}: '{err.get('input')}' is not a valid name",
            _span(spans, p, path, key=True),
            hint="names are letters, digits and '_', not starting with a digit",
        )
    return Diagnostic("invalid-value", f"{where}: {err['msg']}", _span(spans, p, path), hint=_value_hint(err))


def _value_hint(err: Any) -> str | None:
    ctx = err.get("ctx") or {}
    if "expected" in ctx:
        return f"expected {ctx['expected']}"
    return None
