"""Constrained decoding: a grammar for a node's reply, for models that can be held to one.

Small local models often ignore "Reply with one of: yes, no, maybe" and answer in prose. llama.cpp
can restrict sampling to a grammar, so that the reply is readable by construction. The constraint
is derived from the node's output ports and reply format, and `outputs.parse_outputs` reads the
result as it reads any reply:

  text    one enum, route, int, float, bool or list port: a GBNF grammar (free `str` text is
          left unconstrained: there is nothing to hold it to)
  tagged  `<name>value</name>` for each port in declared order, newline-separated; an optional
          port may be left out; a `str` value may not contain `<` (it would end the tag)
  json    a JSON schema of the ports, which llama.cpp turns into a grammar itself

The constraint is a dict sent as the request's `extra_body` (`{"grammar": ...}` or
`{"json_schema": ...}`), which the embedded provider and llama.cpp's server read. Other providers
would reject those fields, so a model gets a constraint only when it is an embedded `local/`
model or its declaration says `constrained: true` (see `wants_constraint`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flowc.runtime.outputs import OutputSpec
from flowc.spec.types import ANY, BOOL, FLOAT, INT, STR, EnumT, ListT, OptionalT, Prim, RecordT, TypeExpr, non_optional

__all__ = ["reply_constraint", "wants_constraint"]

_INT = '"-"? [0-9]{1,15}'  # bounded: a small model may otherwise count digits until max_tokens
_FLOAT = '"-"? [0-9]{1,15} ("." [0-9]{1,15})?'


def wants_constraint(model_id: str, constrained: bool | None) -> bool:
    """Whether requests to this model carry a decoding constraint: the declaration decides;
    undeclared, only the embedded models (which always support grammars) get one."""
    return constrained if constrained is not None else model_id.startswith("local/")


def reply_constraint(spec: OutputSpec) -> dict[str, Any] | None:
    """The `extra_body` fields that hold a reply to `spec`, or None when nothing would be gained."""
    if spec.format == "json":
        return {"json_schema": _object_schema(spec.ports)}
    if spec.format == "text":
        (t,) = spec.ports.values()
        body = _text_value(t)
        return None if body is None else {"grammar": f"root ::= {body}\n"}
    parts = []
    for name, t in spec.ports.items():
        tag = f"{_literal(f'<{name}>')} {_tagged_value(t)} {_literal(f'</{name}>')}"
        parts.append(f'({tag} "\\n")?' if isinstance(t, OptionalT) else f'{tag} "\\n"')
    return {"grammar": "root ::= " + " ".join(parts) + "\n"}


def _literal(text: str) -> str:
    """A GBNF string literal (json.dumps escapes exactly what GBNF needs: quotes, backslashes,
    control characters)."""
    return json.dumps(text)


def _choices(values: tuple[str, ...]) -> str:
    return "(" + " | ".join(_literal(v) for v in values) + ")"


def _scalar(t: TypeExpr) -> str | None:
    """A grammar for a value that cannot contain a newline or `<`, or None for free text."""
    if isinstance(t, EnumT):
        return _choices(t.values)
    if t == INT:
        return _INT
    if t == FLOAT:
        return _FLOAT
    if t == BOOL:
        return '("yes" | "no")'
    return None


def _text_value(t: TypeExpr) -> str | None:
    """The whole reply as one value (text format); None leaves it free."""
    inner = non_optional(t)
    if isinstance(inner, ListT):
        item = _scalar(inner.item) or "[^\\n]+"
        return f'{item} ("\\n" {item})*'
    return _scalar(inner)


def _tagged_value(t: TypeExpr) -> str:
    """A value between `<name>` and `</name>`: lists one item per line, anything else up to `<`."""
    inner = non_optional(t)
    if isinstance(inner, ListT):
        item = _scalar(inner.item) or "[^<\\n]+"
        return f'("\\n" {item})* "\\n"?'
    return _scalar(inner) or "[^<]*"


def _object_schema(ports: Mapping[str, TypeExpr]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: _schema(t) for name, t in ports.items()},
        "required": [name for name, t in ports.items() if not isinstance(t, OptionalT)],
    }


def _schema(t: TypeExpr) -> dict[str, Any]:
    if isinstance(t, OptionalT):
        return {"anyOf": [_schema(t.inner), {"type": "null"}]}
    if isinstance(t, EnumT):
        return {"enum": list(t.values)}
    if isinstance(t, ListT):
        return {"type": "array", "items": _schema(t.item)}
    if isinstance(t, RecordT):
        return _object_schema(dict(t.fields))
    if isinstance(t, Prim) and t != ANY:
        return {"type": {STR: "string", INT: "integer", FLOAT: "number", BOOL: "boolean"}[t]}
    return {}  # any, or a named type the schema does not spell out
