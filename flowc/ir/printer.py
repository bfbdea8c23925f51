"""A stable text dump of the IR, for golden tests and `--print-ir-after`."""

from __future__ import annotations

from flowc.ir.graph import FlowGraph


def dump_ir(graph: FlowGraph) -> str:
    lines = [f"flowgraph {graph.spec.pipeline}"]
    for node in graph.nodes(pseudo=True):
        ins = ", ".join(f"{k}: {p.type}{'' if p.required else '?='}" for k, p in node.inputs.items())
        outs = ", ".join(f"{k}: {p.type}" for k, p in node.outputs.items())
        extra = f" route={node.route.port}->[{', '.join(node.route.choices)}]" if node.route else ""
        extra += f" model={node.model}" if node.model else ""
        lines.append(f"  node {node.name} [{node.kind}] ({ins}) -> ({outs}){extra}")
    for e in sorted(graph.edges(), key=lambda e: (e.src, e.src_port, e.dst, e.dst_port, e.option)):
        loop = f" loop={e.loop}" if e.loop else ""
        opt = f" option={e.option}" if e.option else ""
        if e.kind == "route":
            lines.append(f"  route {e.src}.{e.src_port} -> {e.dst}{loop}")
        else:
            lines.append(f"  {e.kind} {e.src}.{e.src_port} -> {e.dst}.{e.dst_port}{opt}{loop}")
    for name, lp in graph.loops.items():
        cond = f" while {lp.condition}" if lp.condition is not None else ""
        lines.append(f"  loop {name}: {lp.src} -> {lp.dst} max {lp.max}{cond}")
    for name, p in graph.params.items():
        lines.append(f"  param {name} [{p.kind}{', trainable' if p.trainable else ''}]")
    return "\n".join(lines) + "\n"
