"""Prompt templates: `{{ name }}` and `{{ name.field }}` placeholders, nothing more.

`{{ name.field }}` reads a field of a record value (a key of a mapping); any other value has no
fields and renders empty (check-templates reports it when the type is known).

Deliberately tiny (no loops, no logic): a template names the inputs it reads, which the static
checks verify, and values are rendered by type (passages numbered, lists as lines, records as JSON).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)(?:\.([A-Za-z_][A-Za-z0-9_]*))?\s*\}\}")


@dataclass(frozen=True)
class Placeholder:
    name: str
    field: str | None
    offset: int  # in the template text
    length: int


class TemplateError(ValueError):
    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


def placeholders(template: str) -> list[Placeholder]:
    """Every `{{ ... }}` in `template`; raises TemplateError on a malformed or unclosed one."""
    out: list[Placeholder] = []
    pos = 0
    while True:
        start = template.find("{{", pos)
        if start < 0:
            break
        m = _PLACEHOLDER.match(template, start)
        if not m:
            end = template.find("}}", start)
            if end < 0:
                raise TemplateError("'{{' is never closed with '}}'", start)
            inner = template[start + 2 : end].strip()
            raise TemplateError(
                f"'{{{{{inner}}}}}' is not a placeholder: write {{{{name}}}} or {{{{name.field}}}}", start
            )
        out.append(Placeholder(m.group(1), m.group(2), start, m.end() - start))
        pos = m.end()
    return out


def render_value(v: Any) -> str:
    """How a value appears in a prompt."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return json.dumps(v)
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, list):
        if v and all(isinstance(x, list) and all(_is_passage(d) for d in x) for x in v):
            v = [d for x in v for d in x]  # passages of several searches (`all search.docs`): one list
        if all(_is_passage(x) for x in v):
            return "\n".join(
                f"[{i}] {x.get('title', '')}: {x['text']}" if x.get("title") else f"[{i}] {x['text']}"
                for i, x in enumerate(v, 1)
            )
        return "\n".join(f"- {render_value(x)}" for x in v)
    if isinstance(v, dict):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def _is_passage(x: Any) -> bool:
    return isinstance(x, dict) and "text" in x


def render(template: str, values: dict[str, Any]) -> str:
    """Fill `template` from `values` (every placeholder must have a value: checked statically)."""

    def sub(m: re.Match[str]) -> str:
        v = values[m.group(1)]
        if m.group(2):
            # a field of a data value only: a mapping's key (a record's field). Never an attribute:
            # `{{question.__class__}}` must not reach Python's internals.
            v = v.get(m.group(2), "") if isinstance(v, Mapping) else ""
        return render_value(v)

    return _PLACEHOLDER.sub(sub, template)
