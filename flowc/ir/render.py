"""Draw a FlowGraph as Mermaid or Graphviz DOT (what `flowc graph` prints)."""

from __future__ import annotations

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
    """A Mermaid node id: prefixed, so that no node name can be one of Mermaid's words (`end`,
    `graph`, `subgraph`, `style`, ...) or start an edge marker (`o`, `x`)."""
    return {"$input": "in__", "$output": "out__"}.get(name, f"n_{name}")


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label: quotes as the entity Mermaid reads, no line breaks."""
    return text.replace('"', "#quot;").replace("\n", " ")


def _dot_string(text: str) -> str:
    """A DOT quoted string, UTF-8 as it is (JSON's `\\u00b7` escapes are not DOT and show as such)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


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
        lines.append(f'  {_id(n.name)}{a}"{_mermaid_text(_label(graph, n.name))}"{b}')
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
    lines = [f"digraph {_dot_string(graph.spec.pipeline)} {{", "  rankdir=TB;", "  node [fontname=Helvetica];"]
    for n in graph.nodes(pseudo=True):
        lines.append(
            f"  {_dot_string(n.name)} [label={_dot_string(_label(graph, n.name))}, shape={shapes.get(n.kind, 'box')}];"
        )
    for e in graph.edges():
        attrs = []
        if e.kind == "route":
            attrs += [
                "style=dashed",
                f"label={_dot_string('route' + (f' ≤{graph.loops[e.loop].max}' if e.loop else ''))}",
            ]
        else:
            attrs.append(f"label={_dot_string(e.src_port + ('' if e.src_port == e.dst_port else ' → ' + e.dst_port))}")
            if e.kind == "history":
                attrs.append("style=dotted")
        if e.loop and e.kind != "route":
            attrs.append("color=red")
        lines.append(f"  {_dot_string(e.src)} -> {_dot_string(e.dst)} [{', '.join(attrs)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
