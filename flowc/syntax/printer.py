"""Print a spec as canonical `.flow` text (what `flowc fmt` writes).

Round trip: `parse_flow(print_flow(spec)).dump() == spec.dump()` for every spec, which the
property tests check over the example pipelines and generated specs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flowc.spec.models import (
    LLMNode,
    MapNode,
    Node,
    Pipeline,
    RetrieveNode,
    SubflowNode,
    ToolNode,
)
from flowc.syntax.parser import long_string_value

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_KEYWORDS = {"true", "false", "null"}
IND = "  "


def _scalar(v: Any, indent: str = "") -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return json.dumps(v)
    if isinstance(v, str):
        if _NAME.fullmatch(v) and v not in _KEYWORDS and not _is_grammar_keyword(v):
            return v
        if "\n" in v:
            block = _long_string(v, indent)
            if block is not None:
                return block
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x, indent) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_key(k)}: {_scalar(x, indent)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot print {type(v).__name__}")


def _is_grammar_keyword(v: str) -> bool:
    # Bare words the grammar reserves in value position would not read back as names.
    return v in {"all", "not", "and", "or"}


def _key(k: str) -> str:
    return k if _NAME.fullmatch(k) else json.dumps(k, ensure_ascii=False)


def _long_string(text: str, indent: str) -> str | None:
    """A triple-quoted block for `text`, or None if the block would not read back the same."""
    if '"""' in text or "\\" in text or text.endswith("\n") or text != text.rstrip(" \t"):
        return None
    inner = indent + IND
    lines = [(inner + line) if line.strip() else "" for line in text.split("\n")]
    raw = '"""\n' + "\n".join(lines) + "\n" + inner + '"""'
    return raw if long_string_value(raw) == text else None


def print_flow(spec: Pipeline) -> str:
    out: list[str] = []
    for alias, path in spec.imports.items():
        out.append(f"import {json.dumps(path)} as {alias}")
    if out:
        out.append("")
    out.append(f"pipeline {spec.pipeline} {{")
    body: list[list[str]] = []
    if spec.description:
        body.append([f"{IND}description: {_scalar(spec.description, IND)}"])
    if spec.optimize:
        body.append([f"{IND}optimize: {_scalar(spec.optimize, IND)}"])
    if spec.types:
        body.append([f"{IND}type {n} = {t}" for n, t in spec.types.items()])
    decls: list[str] = []
    for n, i in spec.inputs.items():
        line = f"{IND}input {n}: {i.type}"
        if i.default is not None:
            line += f" = {_scalar(i.default, IND)}"
        if i.description:
            line += f" {{ description: {_scalar(i.description, IND)} }}"
        decls.append(line)
    for n, o in spec.outputs.items():
        line = f"{IND}output {n}" + (f": {o.type}" if o.type is not None else "") + f" <- {o.source}"
        if o.description:
            line += f" {{ description: {_scalar(o.description, IND)} }}"
        decls.append(line)
    if decls:
        body.append(decls)
    for n, md in spec.models.items():
        props = md.model_dump(mode="json", exclude_defaults=True, exclude={"id"})
        body.append(_decl(f"model {n} = {json.dumps(md.id)}", props))
    for n, c in spec.corpora.items():
        props = c.model_dump(mode="json", exclude_defaults=True, exclude={"path"})
        body.append(_decl(f"corpus {n} = {json.dumps(c.path)}", props))
    for n, node in spec.nodes.items():
        body.append(_node(f"node {n}: {node.kind}", node, IND))
    if spec.loops:
        lines = []
        for n, lp in spec.loops.items():
            line = f"{IND}loop {n}: {lp.from_} -> {lp.to} max {lp.max}"
            if lp.while_ is not None:
                line += f" while {lp.while_}"
            lines.append(line)
        body.append(lines)
    if spec.metrics:
        body.append(
            [f"{IND}metric {n}: {md.fn}(output = {md.output}, target = {md.target})" for n, md in spec.metrics.items()]
        )
    for n, t in spec.tests.items():
        lines = [f"{IND}test {n} {{"]
        lines += [f"{IND * 2}{k} = {_scalar(v, IND * 2)}" for k, v in t.inputs.items()]
        lines += [f"{IND * 2}expect {e.output} {e.op} {_scalar(e.value, IND * 2)}" for e in t.expect]
        lines.append(f"{IND}}}")
        body.append(lines)
    out.append("\n\n".join("\n".join(b) for b in body))
    out.append("}")
    return "\n".join(out) + "\n"


def _decl(head: str, props: dict[str, Any]) -> list[str]:
    if not props:
        return [IND + head]
    lines = [f"{IND}{head} {{"]
    lines += [f"{IND * 2}{k}: {_scalar(v, IND * 2)}" for k, v in props.items()]
    lines.append(f"{IND}}}")
    return lines


_NODE_PROPS = (
    "description",
    "role",
    "model",
    "corpus",
    "method",
    "k",
    "skip_seen",
    "filter_subqueries",
    "function",
    "flow",
    "item",
    "max_items",
    "format",
    "trainable",
    "fallback",
    "criteria",
    "system",
    "prompt",
)


def _node(head: str, node: Node | LLMNode | RetrieveNode | ToolNode | SubflowNode, indent: str) -> list[str]:
    inner = indent + IND
    lines = [f"{indent}{head} {{"]
    data = node.model_dump(
        mode="json", exclude_defaults=True, exclude={"kind", "inputs", "outputs", "demos", "body", "over"}
    )
    data.pop("kind", None)  # the serializer always keeps the discriminator
    # trainable defaults to True for llm nodes; exclude_defaults already drops it unless False
    for k in _NODE_PROPS:
        if k in data:
            lines.append(f"{inner}{k}: {_scalar(data.pop(k), inner)}")
    for k, v in data.items():  # anything not in the preferred order
        lines.append(f"{inner}{k}: {_scalar(v, inner)}")
    if isinstance(node, MapNode):
        lines.append(f"{inner}over <- {node.over}")
    for port, b in node.inputs.items():
        lines.append(f"{inner}{port} <- {b}")
    outputs = getattr(node, "outputs", None) or {}
    for port, t in outputs.items():
        lines.append(f"{inner}output {port}: {t}")
    for demo in getattr(node, "demos", None) or []:
        lines.append(f"{inner}demo {_scalar(demo, inner)}")
    if isinstance(node, MapNode):
        lines += _node(f"do: {node.body.kind}", node.body, inner)
    lines.append(f"{indent}}}")
    return lines
