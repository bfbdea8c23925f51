"""The scheduling plan: per-graph facts the executor needs on every firing attempt (which nodes
gate which, who shares a loop, who consumes what), worked out once per compiled graph instead of
through networkx on each step."""

from __future__ import annotations

from dataclasses import dataclass, field

from flowc.ir.graph import INPUT, OUTPUT, FlowGraph


@dataclass
class Plan:
    """Per-graph facts the scheduler needs, computed once per executor."""

    gates: dict[str, set[str]]
    enablers: dict[str, set[str]]
    same_loop: dict[str, set[str]]  # node -> nodes sharing a loop with it
    loop_of_edge: dict[tuple[str, str], str]  # (src, dst) -> loop name, for back edges
    consumers: dict[str, list[str]]
    # node -> the sources of its non-route in-edges (INPUT included), and those that are nodes:
    # read on every firing attempt, so resolved once here instead of through networkx each time.
    sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    node_sources: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # node -> its sources that belong to a loop it is not in: it reads the loop's result, so it
    # waits until the loop is over instead of firing on every round.
    loop_sources: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, g: FlowGraph) -> Plan:
        names = [n.name for n in g.nodes()]
        same: dict[str, set[str]] = {n: set() for n in names}
        for loop in g.loops:
            members = g.loop_members(loop)
            for m in members:
                if m in same:
                    same[m] |= members
        consumers: dict[str, list[str]] = {n: [] for n in [*names, INPUT]}
        loop_edges: dict[tuple[str, str], str] = {}
        for e in g.edges():
            if e.dst != OUTPUT and e.dst not in consumers.get(e.src, []):
                consumers.setdefault(e.src, []).append(e.dst)
            if e.loop:
                loop_edges[(e.src, e.dst)] = e.loop
        sources = {n: tuple(dict.fromkeys(e.src for e in g.in_edges(n) if e.kind != "route")) for n in names}
        return cls(
            {n: g.gates(n) for n in names},
            {n: g.enablers(n) for n in names},
            same,
            loop_edges,
            consumers,
            sources,
            {n: tuple(s for s in srcs if s != INPUT) for n, srcs in sources.items()},
            {n: {s for s in srcs if s in same and same[s] and n not in same[s]} for n, srcs in sources.items()},
        )
