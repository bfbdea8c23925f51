"""Draw a FlowGraph as Mermaid or Graphviz DOT (what `flowc graph` prints)."""

from __future__ import annotations

import json

from flowc.ir.graph import INPUT, OUTPUT, FlowGraph

_SHAPES = {
    "llm": ("[", "]"),
    "retrieve": ("[(", ")]"),
    "tool": ("[[", "]]"),
    "map": ("[/", "/]"),
    "subflow": ("[[", "]]"),
    INPUT: ("([", "])"),
    OUTPUT: ("([", "])"),
}


def _id(name: str) -> str:
    return {"$input": "__input", "$output": "__output"}.get(name, name)


def _label(graph: FlowGraph, name: str) -> str:
    n = graph.node(name)
    if name == INPUT:
        return "input: " + ", ".join(n.outputs)
    if name == OUTPUT:
        return "output: " + ", ".join(n.inputs)
    extra = f" · {n.role}" if n.role else ""
    return f"{name} ({n.kind}{extra})"


def to_mermaid(graph: FlowGraph) -> str:
    lines = ["flowchart TD"]
    for n in graph.nodes(pseudo=True):
        a, b = _SHAPES.get(n.kind, ("[", "]"))
        lines.append(f'  {_id(n.name)}{a}"{_label(graph, n.name)}"{b}')
    seen: set[tuple[str, str, str]] = set()
    for e in graph.edges():
        key = (e.src, e.dst, e.kind + (e.loop or ""))
        if key in seen:
            continue
        seen.add(key)
        src, dst = _id(e.src), _id(e.dst)
        if e.kind == "route":
            label = f"{e.dst}" + (f" · {e.loop} ≤{graph.loops[e.loop].max}" if e.loop else "")
            lines.append(f'  {src} -. "{label}" .-> {dst}')
        elif e.loop:
            lines.append(f'  {src} == "{e.loop} ≤{graph.loops[e.loop].max}" ==> {dst}')
        else:
            label = e.src_port if e.src_port == e.dst_port else f"{e.src_port} → {e.dst_port}"
            arrow = "-.->" if e.kind == "history" else "-->"
            lines.append(f"  {src} {arrow}|{label}| {dst}")
    return "\n".join(lines) + "\n"


def to_dot(graph: FlowGraph) -> str:
    shapes = {
        "llm": "box",
        "retrieve": "cylinder",
        "tool": "component",
        "map": "parallelogram",
        "subflow": "box3d",
        INPUT: "oval",
        OUTPUT: "oval",
    }
    lines = [f"digraph {json.dumps(graph.spec.pipeline)} {{", "  rankdir=TB;", "  node [fontname=Helvetica];"]
    for n in graph.nodes(pseudo=True):
        lines.append(
            f"  {json.dumps(n.name)} [label={json.dumps(_label(graph, n.name))}, shape={shapes.get(n.kind, 'box')}];"
        )
    for e in graph.edges():
        attrs = []
        if e.kind == "route":
            attrs += [
                "style=dashed",
                f"label={json.dumps('route' + (f' ≤{graph.loops[e.loop].max}' if e.loop else ''))}",
            ]
        else:
            attrs.append(f"label={json.dumps(e.src_port + ('' if e.src_port == e.dst_port else ' → ' + e.dst_port))}")
            if e.kind == "history":
                attrs.append("style=dotted")
        if e.loop and e.kind != "route":
            attrs.append("color=red")
        lines.append(f"  {json.dumps(e.src)} -> {json.dumps(e.dst)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
