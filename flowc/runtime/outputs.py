"""Reading a model's reply into a node's typed outputs, and telling the model how to reply.

Formats: `text` (the whole reply is the one output), `tagged` (`<name>value</name>` per output),
`json` (an object with one key per output); `auto` picks text for a single `str`/enum output and
tagged otherwise. Values are coerced to their port types (enum and route values matched leniently:
case, quotes and surrounding words ignored). Anything that cannot be read raises OutputParseError
(the executor then asks the model once to repair its reply): never a silently wrong value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flowc.errors import OutputParseError
from flowc.spec.types import ANY, BOOL, FLOAT, INT, STR, EnumT, ListT, OptionalT, Prim, RecordT, TypeExpr, non_optional

__all__ = ["MISSING", "OutputSpec", "format_instructions", "parse_outputs", "resolve_format"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


@dataclass(frozen=True)
class OutputSpec:
    """The outputs a node expects and the reply format."""

    ports: Mapping[str, TypeExpr]
    format: str  # text | tagged | json


def resolve_format(fmt: str, ports: Mapping[str, TypeExpr]) -> str:
    if fmt != "auto":
        return fmt
    if len(ports) == 1:
        (t,) = ports.values()
        inner = non_optional(t)
        if inner in (STR, ANY) or isinstance(inner, EnumT):
            return "text"
    return "tagged"


def _describe(t: TypeExpr) -> str:
    inner = non_optional(t)
    if isinstance(inner, EnumT):
        return "one of: " + ", ".join(inner.values)
    if isinstance(inner, ListT):
        return f"a list of {_describe(inner.item)}s, one per line"
    if inner == INT:
        return "a whole number"
    if inner == FLOAT:
        return "a number"
    if inner == BOOL:
        return "yes or no"
    if isinstance(inner, RecordT):
        return "a JSON object with " + ", ".join(k for k, _ in inner.fields)
    return "text"


def format_instructions(spec: OutputSpec) -> str:
    """The sentence appended to the prompt that says how to reply (empty for plain text)."""
    if spec.format == "text":
        (t,) = spec.ports.values()
        inner = non_optional(t)
        return f"Reply with {_describe(inner)}." if isinstance(inner, EnumT) else ""
    if spec.format == "json":
        keys = ", ".join(f'"{k}" ({_describe(t)})' for k, t in spec.ports.items())
        return f"Reply with a JSON object with the keys {keys}."
    parts = ", ".join(f"<{k}>{_tag_placeholder(t)}</{k}>" for k, t in spec.ports.items())
    return f"Reply with {parts}."


_PLACEHOLDERS = ("...", "…")


def _free_text(t: TypeExpr) -> bool:
    return non_optional(t) in (STR, ANY)


def _tag_placeholder(t: TypeExpr) -> str:
    """What a tag's content is described as: "..." for free text, since a small model copies a
    word like "text" between the tags literally (SmolLM2 searched for "text")."""
    return _PLACEHOLDERS[0] if _free_text(t) else _describe(t)


def render_reply(spec: OutputSpec, values: Mapping[str, Any]) -> str:
    """How a demo's outputs look as the assistant's reply, in the node's format."""
    if spec.format == "text":
        return _show(next(iter(values.values()), ""))
    if spec.format == "json":
        return json.dumps({k: values.get(k) for k in spec.ports}, ensure_ascii=False)
    return "".join(f"<{k}>{_show(values.get(k, ''))}</{k}>" for k in spec.ports)


def _show(v: Any) -> str:
    if isinstance(v, list):
        return "\n".join(_show(x) for x in v)
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


def parse_outputs(text: str, spec: OutputSpec, *, node: str, model: str | None = None) -> dict[str, Any]:
    """Typed values for every port; a port that is optional and absent becomes None.

    A route port that cannot be read is returned as MISSING so the executor can take the fallback.
    """
    raw: dict[str, Any] = {}
    if spec.format == "text":
        (name,) = spec.ports
        raw[name] = text.strip()
    elif spec.format == "json":
        obj = _json_object(text)
        if obj is None:
            raise OutputParseError(
                "output-parse-error",
                "the reply is not a JSON object",
                node=node,
                model=model,
                hint=f"reply with JSON keys {', '.join(spec.ports)}",
            )
        raw = {k: obj[k] for k in spec.ports if k in obj}
    else:
        for name in spec.ports:
            found = _tagged(text, name)
            if found is not None:
                raw[name] = found
        if not raw and len(spec.ports) == 1:
            raw[next(iter(spec.ports))] = text.strip()  # a lone answer without tags
    if spec.format == "tagged":
        # A tag that only repeats the instruction's placeholder holds no answer (SmolLM2 does this):
        # it counts as missing, so an optional output is None and a binding's `??` moves on.
        for name, t in spec.ports.items():
            value = raw.get(name)
            if isinstance(value, str) and value.strip() in _PLACEHOLDERS and _free_text(t):
                del raw[name]
    out: dict[str, Any] = {}
    problems: list[str] = []
    for name, t in spec.ports.items():
        route = isinstance(t, EnumT) and t.route
        inner = non_optional(t)
        if spec.format == "tagged" and isinstance(inner, ListT) and raw.get(name) == "":
            out[name] = []  # an empty <name></name> is an empty list (no sub-questions), not a missing one
            continue
        if name not in raw or raw[name] in ("", None):
            if isinstance(t, OptionalT):
                out[name] = None
            elif route:
                out[name] = MISSING
            else:
                problems.append(f"'{name}' is missing")
            continue
        try:
            out[name] = coerce(raw[name], t)
        except ValueError as e:
            if route:
                out[name] = MISSING
            elif isinstance(t, OptionalT):
                out[name] = None
            else:
                problems.append(f"'{name}': {e}")
    if problems:
        raise OutputParseError(
            "output-parse-error",
            "cannot read the reply: " + "; ".join(problems),
            node=node,
            model=model,
            hint=format_instructions(spec) or "reply with plain text",
        )
    return out


def _tagged(text: str, name: str) -> str | None:
    m = re.search(rf"<{name}>(.*?)</{name}>", text, re.S | re.I)
    if m:
        return m.group(1).strip()
    m = re.search(rf"<{name}>(.*)$", text, re.S | re.I)  # an unclosed last tag (truncated reply)
    return m.group(1).strip() if m else None


def _json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


_WORD = re.compile(r"[A-Za-z0-9_\-]+")


def coerce(value: Any, t: TypeExpr) -> Any:
    """Convert a parsed value (usually text) to type `t`; raises ValueError saying why not."""
    if isinstance(t, OptionalT):
        return None if value in (None, "", "null", "none") else coerce(value, t.inner)
    if t == ANY:
        return value
    if isinstance(t, EnumT):
        return _match_choice(str(value), t.values)
    if isinstance(t, Prim):
        return _prim(value, t.name)
    if isinstance(t, ListT):
        items = value if isinstance(value, list) else _split_list(str(value))
        return [coerce(x, t.item) for x in items]
    if isinstance(t, RecordT):
        obj = value if isinstance(value, dict) else _json_object(str(value))
        if obj is None:
            raise ValueError("expected a JSON object")
        return {k: coerce(obj[k], ft) if k in obj else coerce(None, ft) for k, ft in t.fields}
    return value


def _prim(value: Any, name: str) -> Any:
    if name == "str":
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    s = str(value).strip()
    if name == "int":
        m = re.search(r"-?\d+", s.replace(",", ""))
        if not m:
            raise ValueError(f"expected a whole number, got {s[:40]!r}")
        return int(m.group())
    if name == "float":
        m = re.search(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?", s.replace(",", ""))
        if not m:
            raise ValueError(f"expected a number, got {s[:40]!r}")
        return float(m.group())
    if name == "bool":
        low = s.lower()
        if low.startswith(("yes", "true", "1")):
            return True
        if low.startswith(("no", "false", "0")):
            return False
        raise ValueError(f"expected yes or no, got {s[:40]!r}")
    return value


def _match_choice(text: str, choices: tuple[str, ...]) -> str:
    """The choice the text names: exact, then case-insensitive, then the first choice named as a word."""
    s = text.strip().strip("\"'`.").strip()
    if s in choices:
        return s
    lower = {c.lower(): c for c in choices}
    if s.lower() in lower:
        return lower[s.lower()]
    for word in _WORD.findall(text):
        if word.lower() in lower:
            return lower[word.lower()]
    raise ValueError(f"expected one of {', '.join(choices)}, got {text.strip()[:40]!r}")


def _split_list(text: str) -> list[str]:
    s = text.strip()
    if s.startswith("["):
        try:
            parsed = json.loads(s)
            if isinstance(parsed, list):
                return [x if isinstance(x, str) else json.dumps(x) for x in parsed]
        except json.JSONDecodeError:
            pass
    tags = re.findall(r"<(q\d*|item)>(.*?)</\1>", s, re.S | re.I)
    if tags:
        return [v.strip() for _, v in tags if v.strip()]
    lines = [re.sub(r"^\s*(?:[-*•]|\d+[.)])\s*", "", line).strip() for line in s.splitlines()]
    lines = [x for x in lines if x]
    if len(lines) == 1 and "," in lines[0]:
        return [x.strip() for x in lines[0].split(",") if x.strip()]
    return lines
