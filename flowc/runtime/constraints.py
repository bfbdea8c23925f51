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

The constraint is a dict merged into the request body (`{"grammar": ...}` or `{"json_schema":
...}`), which the embedded provider and llama.cpp's server read. Other servers would reject those
fields, so a self-hosted `api_base` gets one only when its declaration says `constrained: true`.

Hosted APIs hold replies to a JSON schema instead (OpenAI's structured outputs; litellm maps the
same `response_format` to a tool call for Anthropic and the like): for a model whose provider
supports it (litellm's model map says `supports_response_schema`), a node with typed outputs
asks for its outputs as one JSON object and sends their strict schema as `response_format`
(`response_format()`). `constraint_kind` decides which of the two a model gets; `constrained:
false` turns both off.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from flowc.runtime.outputs import OutputSpec
from flowc.runtime.transports.catalog import supports_response_schema
from flowc.runtime.transports.endpoints import is_own_host, provider_of
from flowc.spec.types import ANY, BOOL, FLOAT, INT, STR, EnumT, ListT, OptionalT, Prim, RecordT, TypeExpr, non_optional

__all__ = ["constraint_kind", "reply_constraint", "response_format", "wants_constraint"]

ConstraintKind = Literal["grammar", "schema"]

_INT = '"-"? [0-9]{1,15}'  # bounded: a small model may otherwise count digits until max_tokens
_FLOAT = '"-"? [0-9]{1,15} ("." [0-9]{1,15})?'


def wants_constraint(model_id: str, constrained: bool | None) -> bool:
    """Whether requests to this model carry a grammar: the declaration decides; undeclared, only
    the embedded models (which always support grammars) get one."""
    return constrained if constrained is not None else model_id.startswith("local/")


def constraint_kind(model_id: str, constrained: bool | None, api_base: str | None = None) -> ConstraintKind | None:
    """How a model's replies are held to a node's outputs: a llama.cpp `grammar` (the embedded
    models; a self-hosted api_base declared `constrained: true`), a JSON `schema` (a hosted API
    that supports structured outputs; any hosted API declared `constrained: true`), or None."""
    if constrained is False:
        return None
    if model_id.startswith("local/"):
        return "grammar"
    if api_base is not None and not is_own_host(provider_of(model_id), api_base):
        return "grammar" if constrained else None  # a self-hosted server: llama.cpp's fields
    if constrained:
        return "schema"
    return "schema" if supports_response_schema(model_id) else None


def response_format(spec: OutputSpec, name: str) -> dict[str, Any]:
    """The `response_format` field asking a hosted API for a JSON object holding `spec`'s ports.

    Strict where the schema allows it (OpenAI's strict mode wants every property required, optional
    ones as `T | null`, no extra properties, and no untyped `any` value)."""
    schema = _strict_object(spec.ports)
    strict = not _untyped(schema)
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in name)[:64] or "reply"
    return {
        "response_format": {"type": "json_schema", "json_schema": {"name": safe, "strict": strict, "schema": schema}}
    }


def _untyped(schema: dict[str, Any]) -> bool:
    """Whether a schema holds an untyped value ({}), which strict mode cannot express."""
    if not schema:
        return True
    parts = [*schema.get("properties", {}).values(), *schema.get("anyOf", ())]
    if "items" in schema:
        parts.append(schema["items"])
    return any(_untyped(p) for p in parts)


def _strict_object(ports: Mapping[str, TypeExpr]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {k: _strict(t) for k, t in ports.items()},
        "required": list(ports),
        "additionalProperties": False,
    }


def _strict(t: TypeExpr) -> dict[str, Any]:
    if isinstance(t, OptionalT):
        return {"anyOf": [_strict(t.inner), {"type": "null"}]}
    if isinstance(t, EnumT):
        return {"type": "string", "enum": list(t.values)}
    if isinstance(t, ListT):
        return {"type": "array", "items": _strict(t.item)}
    if isinstance(t, RecordT):
        return _strict_object(dict(t.fields))
    if isinstance(t, Prim) and t != ANY:
        return {"type": {STR: "string", INT: "integer", FLOAT: "number", BOOL: "boolean"}[t]}
    return {}


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
