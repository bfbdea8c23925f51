"""The FlowGraph IR: typed ports, data/route edges, and named params, over networkx.

Every node payload is one frozen `IRNode`; every edge payload one frozen `Edge`. Code outside
`flowc.ir` reads the graph only through `FlowGraph`'s methods, never networkx attributes.

Two pseudo-nodes frame the graph: `$input` (its outputs are the pipeline's inputs) and `$output`
(its inputs are the pipeline's outputs).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx

from flowc.source import Span
from flowc.spec.exprs import Expr
from flowc.spec.models import LLMNode, MapNode, Node, Pipeline
from flowc.spec.types import TypeExpr

INPUT = "$input"
OUTPUT = "$output"

EdgeKind = Literal["data", "history", "route"]
ParamKind = Literal["prompt", "system", "demos", "weights"]


@dataclass(frozen=True)
class Port:
    name: str
    type: TypeExpr
    required: bool = True


@dataclass(frozen=True)
class Route:
    """A router's choice: the output `port` names the next node among `choices`."""

    port: str
    choices: tuple[str, ...]
    fallback: str | None


@dataclass(frozen=True)
class IRNode:
    name: str
    kind: str  # llm | retrieve | tool | subflow | map | $input | $output
    inputs: Mapping[str, Port]
    outputs: Mapping[str, Port]
    bindings: Mapping[str, Expr] = field(default_factory=dict)
    spec: Node | None = None
    span: Span | None = None
    route: Route | None = None
    role: str = ""
    model: str | None = None
    subflow: FlowGraph | None = None  # for subflow nodes, and map bodies that are subflows

    @property
    def is_llm(self) -> bool:
        return self.kind == "llm" or (isinstance(self.spec, MapNode) and isinstance(self.spec.body, LLMNode))


@dataclass(frozen=True)
class Edge:
    """`src.src_port` feeds `dst.dst_port` (data/history), or `src` may pick `dst` (route)."""

    src: str
    src_port: str
    dst: str
    dst_port: str
    kind: EdgeKind = "data"
    option: int = 0  # position among the alternatives of a coalesce (`a ?? b`)
    loop: str | None = None  # the loop this back edge belongs to
    span: Span | None = None


@dataclass(frozen=True)
class Param:
    """A named, addressable piece of the pipeline an optimizer may change."""

    name: str  # e.g. "plan.prompt", "plan.demos", "plan.system", "small.weights"
    kind: ParamKind
    value: Any
    trainable: bool
    node: str | None = None
    role: str = ""
    span: Span | None = None


@dataclass(frozen=True)
class LoopInfo:
    name: str
    src: str
    dst: str
    max: int
    condition: Expr | None
    span: Span | None


class FlowGraph:
    """A typed dataflow graph. Built by `lower()`, treated as immutable afterwards."""

    def __init__(self, spec: Pipeline) -> None:
        self.spec = spec
        self._g: nx.MultiDiGraph = nx.MultiDiGraph()
        self._payloads: dict[str, IRNode] = {}  # name -> node, the hot lookup, without networkx views
        self.params: dict[str, Param] = {}
        self.loops: dict[str, LoopInfo] = {}
        self.types: dict[str, TypeExpr] = {}
        # Derived structures, computed on first use and dropped when the graph changes. Passes run
        # many queries on one graph; rebuilding these per query made compile time quadratic.
        self._fwd: nx.DiGraph | None = None
        self._topo: list[str] | None = None
        self._topo_index: dict[str, int] | None = None
        self._scc: dict[str, int] | None = None
        self._scc_members: list[set[str]] | None = None

    def _changed(self, *, structure: bool) -> None:
        """Forget derived data: always the forward graph and orders; the strongly connected
        components only when nodes or edges were added (re-tagging edges keeps them)."""
        self._fwd = self._topo = self._topo_index = None
        if structure:
            self._scc = self._scc_members = None

    # -- building (used by lower) ------------------------------------------------------------------

    def add_node(self, node: IRNode) -> None:
        self._g.add_node(node.name, payload=node)
        self._payloads[node.name] = node
        self._changed(structure=True)

    def replace_node(self, node: IRNode) -> None:
        self._g.nodes[node.name]["payload"] = node
        self._payloads[node.name] = node

    def add_edge(self, edge: Edge) -> None:
        self._g.add_edge(edge.src, edge.dst, payload=edge)
        self._changed(structure=True)

    def mark_loop_edges(self, loop: str, src: str, dst: str) -> int:
        """Tag as back edges of `loop` the edges from `src` into the loop's body: `dst` and every
        node between `dst` and `src`. Returns how many edges were tagged (0: no edge src→dst)."""
        if not self._g.has_edge(src, dst):
            return 0
        # The body lies on paths dst ⇝ src, so inside the strongly connected component of src in
        # the whole graph: search only there (linear in the component, not in the graph).
        body: set[str] = set()
        comp = self._component(src)
        if dst in comp:
            g = nx.DiGraph()
            g.add_nodes_from(comp)
            g.add_edges_from(
                (e.src, e.dst) for n in comp if n != src for e in self.out_edges(n) if e.loop is None and e.dst in comp
            )
            body = (nx.descendants(g, dst) | {dst}) & (nx.ancestors(g, src) | {src})
        n = 0
        for target in body | {dst}:
            if not self._g.has_edge(src, target):
                continue
            for _key, attrs in self._g[src][target].items():
                e: Edge = attrs["payload"]
                attrs["payload"] = Edge(e.src, e.src_port, e.dst, e.dst_port, e.kind, e.option, loop, e.span)
                n += 1
        if n:
            self._changed(structure=False)
        return n

    def same_cycle(self, a: str, b: str) -> bool:
        """Do `a` and `b` lie on a common cycle (each reaches the other, back edges included)?
        Answered from the strongly connected components, computed once per graph shape."""
        return a == b or b in self._component(a)

    def _component(self, name: str) -> set[str]:
        """The strongly connected component of `name` in the whole graph (back edges included)."""
        if self._scc is None or self._scc_members is None:
            self._scc_members = [set(c) for c in nx.strongly_connected_components(self._g)]
            self._scc = {n: i for i, c in enumerate(self._scc_members) for n in c}
        i = self._scc.get(name)
        return self._scc_members[i] if i is not None else {name}

    # -- reading -----------------------------------------------------------------------------------

    def node(self, name: str) -> IRNode:
        return self._payloads[name]

    def has_node(self, name: str) -> bool:
        return name in self._g

    def nodes(self, *, pseudo: bool = False) -> Iterator[IRNode]:
        for name in self._g.nodes:
            if pseudo or not name.startswith("$"):
                yield self.node(name)

    def edges(self) -> Iterator[Edge]:
        for _u, _v, attrs in self._g.edges(data=True):
            yield attrs["payload"]

    def in_edges(self, name: str) -> list[Edge]:
        return [a["payload"] for _u, _v, a in self._g.in_edges(name, data=True)]

    def out_edges(self, name: str) -> list[Edge]:
        return [a["payload"] for _u, _v, a in self._g.out_edges(name, data=True)]

    def successors(self, name: str) -> list[str]:
        return list(self._g.successors(name))

    def predecessors(self, name: str) -> list[str]:
        return list(self._g.predecessors(name))

    def _forward(self) -> nx.DiGraph:
        """The cached graph without loop back edges (shared: never mutate it)."""
        if self._fwd is None:
            g = nx.DiGraph()
            g.add_nodes_from(self._g.nodes)
            g.add_edges_from((e.src, e.dst) for e in self.edges() if e.loop is None)
            self._fwd = g
        return self._fwd

    def forward_edges_graph(self) -> nx.DiGraph:
        """The graph without loop back edges: acyclic when every cycle is bounded (a fresh copy)."""
        return self._forward().copy()

    def find_unbounded_cycle(self) -> list[str] | None:
        """A cycle that no loop declaration bounds, as a list of node names, or None."""
        found = self.unbounded_cycles(1)
        return found[0] if found else None

    def unbounded_cycles(self, limit: int) -> list[list[str]]:
        """Up to `limit` distinct cycles that no loop bounds, each as [a, b, ..., a]."""
        g = self._forward()
        if nx.is_directed_acyclic_graph(g):
            return []
        g = g.copy()
        out: list[list[str]] = []
        while len(out) < limit:
            try:
                cyc = nx.find_cycle(g)
            except nx.NetworkXNoCycle:
                break
            out.append([u for u, _v in cyc] + [cyc[0][0]])
            g.remove_edge(*cyc[-1][:2])
        return out

    def topo_order(self) -> list[str]:
        """Nodes in an order where forward edges point onward (ties broken by declaration order);
        declaration order when an unbounded cycle makes that impossible."""
        if self._topo is None:
            g = self._forward()
            order = {n: i for i, n in enumerate(self._g.nodes)}
            if not nx.is_directed_acyclic_graph(g):
                self._topo = list(self._g.nodes)
            else:
                self._topo = list(nx.lexicographical_topological_sort(g, key=lambda n: order[n]))
        return list(self._topo)

    def _topo_positions(self) -> dict[str, int] | None:
        """Each node's place in `topo_order`, or None when the forward graph has a cycle."""
        if self._topo_index is None:
            order = self.topo_order()
            if not nx.is_directed_acyclic_graph(self._forward()):
                return None
            self._topo_index = {n: i for i, n in enumerate(order)}
        return self._topo_index

    def loop_members(self, loop: str) -> set[str]:
        """Nodes on a cycle through `loop`'s back edge: those that can re-run when it is taken."""
        info = self.loops[loop]
        if info.dst not in self._g or info.src not in self._g:
            return set()
        g = self._forward()
        if self._g.has_edge(info.src, info.dst):
            # dst ⇝ v ⇝ src plus the back edge src → dst is a cycle: v is in src's component.
            comp = self._component(info.src)
            if info.dst not in comp:
                return {info.dst} if info.dst == info.src else set()
            g = g.subgraph(comp)
        down = nx.descendants(g, info.dst) | {info.dst}
        up = nx.ancestors(g, info.src) | {info.src}
        return down & up

    def gates(self, name: str) -> set[str]:
        """Routers that may choose `name` on a forward (non-loop) route edge: `name` runs only when
        one of them chose it, or when a node those routers lead to sends it a value."""
        return {e.src for e in self.in_edges(name) if e.kind == "route" and e.loop is None}

    def enablers(self, name: str) -> set[str]:
        """Nodes whose values open the gate of `name`: forward descendants of its gating routers."""
        gates = self.gates(name)
        if not gates:
            return set()
        g = self._forward()
        out: set[str] = set()
        for r in gates:
            out |= nx.descendants(g, r)
        out.discard(name)
        return out

    def reaches(self, src: str, targets: set[str]) -> bool:
        """Does a forward path (one edge or more) lead from `src` to a node of `targets`?

        Searches only the nodes placed before the last target in topological order, so a query
        about nearby nodes costs little however large the graph is."""
        if not targets:
            return False
        g = self._forward()
        pos = self._topo_positions()
        limit = max(pos.get(t, len(pos)) for t in targets) if pos is not None else None
        seen: set[str] = set()
        stack = list(g.successors(src))
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in targets:
                return True
            if pos is not None and limit is not None and pos.get(n, 0) >= limit:
                continue
            stack.extend(g.successors(n))
        return False

    def reachable_from(self, sources: set[str], *, follow_loops: bool = True) -> set[str]:
        seen = set(sources)
        stack = list(sources)
        while stack:
            n = stack.pop()
            for e in self.out_edges(n):
                if (follow_loops or e.loop is None) and e.dst not in seen:
                    seen.add(e.dst)
                    stack.append(e.dst)
        return seen

    def __len__(self) -> int:
        return sum(1 for _ in self.nodes())

    def stats(self) -> dict[str, int]:
        return {"nodes": len(self), "edges": self._g.number_of_edges(), "params": len(self.params)}
