"""A compiled flowc pipeline → the source of a DSPy program.

One `dspy.Signature` per llm node (its prompt template as the instructions, typed fields from its
ports; what flowc's adapter needs to send the same messages rides in the output fields' schema
extras), and one `dspy.Module` whose `forward` runs the nodes in the order flowc's executor does:

- the nodes in topological order; a node runs once each of its inputs has a value
  (`Values.bind`), and a node a router may choose runs only when it was chosen;
- a declared loop is a `for` over at most `max + 1` rounds of its members, continued while its
  router chooses to go back (or, for a loop over a data edge, while its condition holds); a router
  whose loop is spent takes its fallback;
- a map runs its body once per item and gathers one list per output;
- a retrieve node calls `retrievers[corpus](query, k)`, a tool node `tools[function](**inputs)`.

Subflows and nested or overlapping loops are refused (`export-unsupported`).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.ir.graph import FlowGraph, IRNode
from flowc.runtime.outputs import resolve_format
from flowc.spec.exprs import BoolOp, Coalesce, Compare, Expr, History, Lit, Not, Ref
from flowc.spec.models import LLMNode, MapNode, RetrieveNode, ToolNode
from flowc.spec.types import ANY, BOOL, FLOAT, INT, STR, EnumT, ListT, Named, OptionalT, RecordT, TypeExpr

_SUPPORT = Path(__file__).with_name("support.py")
_MODULE_ATTRS = {"forward", "predictors", "named_predictors", "save", "load", "reset_copy", "deepcopy", "callbacks"}


@dataclass(frozen=True)
class Exported:
    """The program's source, its class name, and which predictor attribute is which llm node."""

    source: str
    class_name: str
    predictors: dict[str, str]  # attribute → node name
    warnings: tuple[str, ...] = ()


def python_type(t: TypeExpr) -> str:
    """A flowc type as a Python annotation DSPy understands."""
    if isinstance(t, OptionalT):
        return f"Optional[{python_type(t.inner)}]"
    if isinstance(t, EnumT):
        return "Literal[" + ", ".join(json.dumps(v) for v in t.values) + "]"
    if isinstance(t, ListT):
        return f"list[{python_type(t.item)}]"
    if isinstance(t, RecordT | Named):
        return "dict[str, Any]"
    prims: dict[TypeExpr, str] = {STR: "str", INT: "int", FLOAT: "float", BOOL: "bool", ANY: "Any"}
    return prims.get(t, "Any")


def attr_name(node: str) -> str:
    return f"{node}_" if node in _MODULE_ATTRS or node.startswith("_") else node


def _class_name(pipeline: str, suffix: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in pipeline.split("_") if part) + suffix


def _refuse(message: str, hint: str) -> FlowcError:
    return FlowcError("export-unsupported", message, hint=hint)


def _binding_type(g: FlowGraph, expr: Expr) -> TypeExpr:
    """The type of the value a binding gives (what a DSPy input field holds)."""
    if isinstance(expr, Lit):
        v = expr.value
        return STR if isinstance(v, str) else BOOL if isinstance(v, bool) else INT if isinstance(v, int) else ANY
    if isinstance(expr, History):
        return ListT(_binding_type(g, expr.ref))
    if isinstance(expr, Coalesce):
        return next((t for t in (_binding_type(g, o) for o in expr.options) if t != ANY), ANY)
    if isinstance(expr, Ref):
        if expr.node is None:
            decl = g.spec.inputs.get(expr.port)
            return decl.type if decl is not None else ANY
        if g.has_node(expr.node) and expr.port in g.node(expr.node).outputs:
            t = g.node(expr.node).outputs[expr.port].type
            return t.inner if isinstance(t, OptionalT) else t
    return ANY


def _condition(e: Expr) -> str:
    """A loop condition as Python over the run's values."""
    if isinstance(e, Lit):
        return repr(e.value)
    if isinstance(e, Ref | History | Coalesce):
        return f"v.output({str(e)!r})"
    if isinstance(e, Not):
        return f"not ({_condition(e.item)})"
    if isinstance(e, BoolOp):
        return "(" + f" {e.op} ".join(_condition(i) for i in e.items) + ")"
    assert isinstance(e, Compare)
    return f"compare({_condition(e.left)}, {e.op!r}, {_condition(e.right)})"


class _Writer:
    def __init__(self, compiled: CompiledPipeline) -> None:
        self.c = compiled
        self.g = compiled.graph
        self.lines: list[str] = []
        self.predictors: dict[str, str] = {}
        self.warnings: list[str] = []

    # -- signatures -----------------------------------------------------------------------------

    def signature(self, name: str, spec: LLMNode, node: IRNode) -> str:
        cls = _class_name(name, "Signature")
        body_ports = {
            k: (p.type.item if isinstance(node.spec, MapNode) and isinstance(p.type, ListT) else p.type)
            for k, p in node.outputs.items()
        }
        fmt = resolve_format(spec.format, body_ports)
        if inspect.cleandoc(spec.prompt) != spec.prompt:
            self.warnings.append(
                f"node '{name}': DSPy reads instructions through inspect.cleandoc, which changes this prompt's "
                "indentation or surrounding blank lines"
            )
        out = [f"class {cls}(dspy.Signature):", f"    {spec.prompt!r}", ""]
        for port, expr in spec.inputs.items():
            out.append(f"    {port}: {python_type(_binding_type(self.g, expr))} = dspy.InputField()")
        meta = {"format": fmt, "system": spec.system, "node": name}
        for port, t in body_ports.items():
            out.append(f"    {port}: {python_type(t)} = flowc_output({str(t)!r}, **{meta!r})")
        return "\n".join(out)

    # -- forward --------------------------------------------------------------------------------

    def node_call(self, name: str, indent: str) -> list[str]:
        n = self.g.node(name)
        spec = n.spec
        bindings = {k: str(e) for k, e in n.bindings.items()}
        per_item: list[str] = []
        if isinstance(spec, MapNode):
            bindings.pop("over", None)
            per_item = [k for k, b in list(bindings.items()) if b == spec.item]
            for k in per_item:
                del bindings[k]
        gate = sorted(self.g.gates(name))
        cond = " or ".join(f"v.chose({r!r}, {name!r})" for r in gate)
        out = [f"{indent}# node {name}: {n.kind}"]
        out.append(f"{indent}args = v.bind({bindings!r})")
        out.append(f"{indent}if args is not None{f' and ({cond})' if cond else ''}:")
        inner = indent + "    "
        ports = tuple(n.outputs)
        if isinstance(spec, MapNode):
            out.append(f"{inner}items = v.output({str(spec.over)!r}) or []")
            if spec.max_items:
                out.append(f"{inner}items = items[: {spec.max_items}]")
            call = self._call(
                name, spec.body, "dict(args, **{" + ", ".join(f"{k!r}: x" for k in per_item) + "})", ports
            )
            out.append(f"{inner}results = [{call} for x in items]")
            out.append(f"{inner}v.put({name!r}, gather(results, {ports!r}))")
            return out
        out.append(f"{inner}outputs = {self._call(name, spec, 'args', ports)}")
        out.append(f"{inner}v.put({name!r}, outputs)")
        if n.route is not None:
            r = n.route
            out.append(f"{inner}v.route({name!r}, outputs[{r.port!r}], {r.choices!r}, {r.fallback!r})")
        return out

    def _call(self, name: str, spec: Any, args: str, ports: tuple[str, ...]) -> str:
        if isinstance(spec, LLMNode):
            attr = attr_name(name)
            self.predictors[attr] = name
            return f"predicted(self.{attr}(**{args}), {ports!r})"
        if isinstance(spec, RetrieveNode):
            # the passages, and what was searched under the input's name (`search.query`);
            # `skip_seen` leaves out the passages this node returned earlier in the run
            earlier = f"v.history.get({name + '.docs'!r})" if spec.skip_seen else "None"
            return f"self.retrieve({spec.corpus!r}, {spec.method!r}, {args}, {spec.k}, {ports!r}, {earlier})"
        if isinstance(spec, ToolNode):
            return f"tool_outputs(self.tools[{spec.function!r}](**{args}), {ports!r})"
        raise _refuse(
            f"node '{name}' is a {spec.kind} node, which the DSPy export cannot express",
            "inline the subflow's nodes into the pipeline before exporting",
        )

    def loop_block(self, loop: str, members: list[str], indent: str) -> list[str]:
        info = self.g.loops[loop]
        src = self.g.node(info.src)
        out = [f"{indent}# loop {loop}: {info.src} -> {info.dst}, at most {info.max} more rounds"]
        out.append(f"{indent}for round_ in range({info.max + 1}):")
        for m in members:
            out += self.node_call(m, indent + "    ")
        goes_back = []
        route_back = src.route is not None and any(
            e.kind == "route" and e.loop == loop for e in self.g.out_edges(info.src)
        )
        if route_back:
            targets = tuple(e.dst for e in self.g.out_edges(info.src) if e.kind == "route" and e.loop == loop)
            goes_back.append(f"v.choice.get({info.src!r}) in {targets!r}")
        if info.condition is not None:
            goes_back.append(_condition(info.condition))
        cont = " and ".join(goes_back) or "True"
        out.append(f"{indent}    if round_ == {info.max} or not ({cont}):")
        out.append(f"{indent}        break")
        if route_back and src.route is not None:
            targets = tuple(e.dst for e in self.g.out_edges(info.src) if e.kind == "route" and e.loop == loop)
            out.append(f"{indent}if v.choice.get({info.src!r}) in {targets!r}:  # the loop is spent: the fallback")
            out.append(f"{indent}    v.choice[{info.src!r}] = {src.route.fallback!r}")
        return out

    def forward(self) -> list[str]:
        g = self.g
        order = [n for n in g.topo_order() if not n.startswith("$")]
        loops = {name: g.loop_members(name) for name in g.loops}
        seen: set[str] = set()
        for name, members in loops.items():
            for other, m2 in loops.items():
                if other != name and members & m2:
                    raise _refuse(
                        f"loops '{name}' and '{other}' share nodes",
                        "the DSPy export handles loops that do not nest or overlap",
                    )
            seen |= members
        loop_of = {m: name for name, members in loops.items() for m in members}
        inputs = list(self.c.spec.inputs)
        out = [f"    def forward(self, {', '.join(inputs)}) -> dspy.Prediction:"]
        out.append(f"        v = Values({{{', '.join(f'{i!r}: {i}' for i in inputs)}}})")
        done: set[str] = set()
        for name in order:
            if name in done:
                continue
            if name in loop_of:
                loop = loop_of[name]
                out += self.loop_block(loop, [m for m in order if m in loops[loop]], "        ")
                done |= loops[loop]
                continue
            out += self.node_call(name, "        ")
            done.add(name)
        outputs = {k: str(o.source) for k, o in self.c.spec.outputs.items()}
        out.append(f"        return dspy.Prediction(**{{k: v.output(b) for k, b in {outputs!r}.items()}})")
        return out

    # -- the whole module ------------------------------------------------------------------------

    def write(self) -> Exported:
        c = self.c
        cls = _class_name(c.name, "Program")
        sigs: list[str] = []
        llm_nodes: list[tuple[str, LLMNode, IRNode]] = []
        for n in self.g.nodes():
            spec = n.spec.body if isinstance(n.spec, MapNode) else n.spec
            if isinstance(spec, LLMNode):
                llm_nodes.append((n.name, spec, n))
                sigs.append(self.signature(n.name, spec, n))
        forward = self.forward()
        support = _SUPPORT.read_text(encoding="utf-8").split("from __future__ import annotations\n", 1)[1]
        init = [
            "    def __init__(self, retrievers: dict[str, Any] | None = None, tools: dict[str, Any] | None = None):",
            "        super().__init__()",
            "        self.retrievers = dict(retrievers or {})  # corpus name -> fn(query, k) -> list of passages",
            "        self.tools = dict(tools or {})  # function name -> the Python function",
        ]
        for name, _spec, _n in llm_nodes:
            init.append(f"        self.{attr_name(name)} = dspy.Predict({_class_name(name, 'Signature')})")
        retrieve = [
            "    def retrieve(",
            "        self, corpus: str, method: str, args: dict[str, Any], k: int, ports: tuple[str, ...],",
            "        earlier: Any,",
            "    ) -> dict[str, Any]:",
            "        if corpus not in self.retrievers:",
            "            raise KeyError(f\"pass retrievers={{'{corpus}': fn(query, k)}} to search corpus '{corpus}'\")",
            "        query = args.get('queries') if method == 'maxsim' and args.get('queries') else args.get('query')",
            "        seen = set(passage_ids(earlier))",
            "        hits = self.retrievers[corpus](query, k + len(seen))",
            "        found = [d for d in hits if str(d.get('id')) not in seen]",
            "        return {'docs': found[:k], **{p: args.get(p) for p in ports if p != 'docs'}}",
        ]
        header = [
            f'"""DSPy program exported from the flowc pipeline \'{c.name}\' (`flowc export --to dspy`).',
            "",
            f"{cls}() is a dspy.Module; its predictors are the pipeline's llm nodes. Run it with",
            "dspy.configure(lm=..., adapter=flowc_adapter()) to send exactly the messages flowc sends (and",
            "read replies as flowc does), or with any DSPy adapter. program.json holds the optimized state",
            "(instructions, demos): program.load('program.json').",
            '"""',
            "",
            "from __future__ import annotations",
            "",
            "from typing import Any, Literal, Optional",
            "",
            "import dspy",
            "",
            support.strip("\n"),
            "",
            "",
            "def flowc_output(flowc_type: str, **node: Any) -> Any:",
            '    """An output field; flowc\'s adapter reads the port type, reply format and system prompt here."""',
            "    field = dspy.OutputField(desc=flowc_type)",
            '    field.json_schema_extra["flowc"] = {"type": flowc_type, **node}',
            "    return field",
            "",
            "",
            "def predicted(prediction: Any, ports: tuple[str, ...]) -> dict[str, Any]:",
            "    return {p: prediction.get(p) for p in ports}",
            "",
            "",
            "def tool_outputs(result: Any, ports: tuple[str, ...]) -> dict[str, Any]:",
            "    if len(ports) == 1 and not (isinstance(result, dict) and set(ports) <= set(result)):",
            "        return {ports[0]: result}",
            "    return {p: result[p] for p in ports}",
            "",
            "",
            "def flowc_adapter() -> Any:",
            '    """The adapter that formats and parses like flowc (needs flowc installed)."""',
            "    from flowc.interop.dspy.adapter import FlowcAdapter",
            "",
            "    return FlowcAdapter()",
        ]
        body = [*header, "", "", *("\n\n\n".join(sigs).splitlines())]
        body += ["", "", f"class {cls}(dspy.Module):", *init, "", *retrieve, "", *forward]
        return Exported("\n".join(body) + "\n", cls, dict(self.predictors), tuple(self.warnings))


def program_source(compiled: CompiledPipeline) -> Exported:
    """The DSPy program for `compiled`; raises FlowcError(export-unsupported) for what it cannot express."""
    return _Writer(compiled).write()
