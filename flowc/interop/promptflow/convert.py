"""A Prompt flow DAG flow (flow.dag.yaml) → a flowc pipeline (the canonical spec's plain data).

What maps to what, and what is refused, is the table in docs/interop.md. Every key of the file is
either converted, or reported at its place: an error when the flow would mean something else in
flowc, a warning when a setting is dropped or its behaviour changes, a note when it has no effect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowc.errors import Diagnostic
from flowc.interop.promptflow.models import ModelTable
from flowc.interop.promptflow.pytools import ToolFunction, convert_literal, is_connection, read_tool_file
from flowc.interop.promptflow.reading import Dag, Reference, flowc_name, parse_reference
from flowc.source import SourceFile
from flowc.spec.exprs import Coalesce, Expr, Lit, Ref

_TYPES = {"string": "str", "int": "int", "double": "float", "bool": "bool", "list": "list[any]", "object": "any"}
_TOP_NOTES = {
    "$schema": "the schema URL has no meaning in flowc",
    "environment": "flowc installs nothing: install the tools' requirements yourself",
    "tags": "tags are not kept",
    "display_name": "the display name is not kept",
    "type": "the flow type (standard, chat, evaluation) is not kept",
    "language": None,  # handled: csharp is refused
}
#: Keys of a node that change nothing in flowc when they have these values.
_NODE_NOTES = {"use_variants": (False,), "aggregation": (False,), "enable_cache": (False, True), "comment": None}
ROUTE_PORT = "route"


@dataclass
class _Node:
    pf_name: str
    name: str  # the flowc name
    path: tuple[str | int, ...]  # where its definition is (a variant's node for use_variants)
    data: dict[str, Any]
    kind: str = ""  # llm | python | refused
    tool: ToolFunction | None = None
    ports: dict[str, str] = field(default_factory=dict)  # Prompt flow key ("" = whole output) → flowc port
    routes_to: list[str] = field(default_factory=list)  # flowc names of the nodes this router activates
    activated_by: str | None = None  # the flowc router that activates this node


class Converter:
    def __init__(self, dag: Dag, *, name: str, model_ids: dict[str, str]) -> None:
        self.dag = dag
        self.base = Path(dag.source.path).parent
        self.name = name
        self.models = ModelTable(dag, model_ids)
        self.inputs: dict[str, str] = {}  # Prompt flow input name → flowc name
        self.nodes: dict[str, _Node] = {}  # Prompt flow node name → node
        self.tools: list[tuple[str, str]] = []  # (function, file) to register

    # -- the whole flow -----------------------------------------------------------------------------

    def convert(self) -> dict[str, Any] | None:
        d = self.dag
        data = d.data
        if "entry" in data:
            d.report(
                "import-unsupported",
                "a flex flow (a Python entry point) cannot be converted: only DAG flows can",
                ("entry",),
                hint="convert the DAG flow, or rewrite the entry function as a pipeline",
            )
            return None
        if str(data.get("language", "python")).lower() != "python":
            d.report("import-unsupported", "only Python flows can be converted", ("language",))
            return None
        for key in data:
            if _TOP_NOTES.get(key):
                d.report("import-dropped", f"'{key}' is dropped: {_TOP_NOTES[key]}", (key,), key=True, severity="note")
            elif key in ("environment_variables", "additional_includes"):
                d.report(
                    "import-dropped",
                    f"'{key}' is dropped: flowc sets no environment and copies no files",
                    (key,),
                    key=True,
                    severity="warning",
                    hint="set API keys in the environment; keep the files the tools read next to them",
                )
            elif key not in ("inputs", "outputs", "nodes", "node_variants", "description", "language"):
                d.report("import-unsupported", f"unknown flow key '{key}'", (key,), key=True)
        out: dict[str, Any] = {"pipeline": self.name}
        if isinstance(data.get("description"), str):
            out["description"] = data["description"]
        out["inputs"] = self._inputs()
        self._collect_nodes()
        self._plan_ports()
        self._plan_routes()
        nodes: dict[str, Any] = {}
        for node in self.nodes.values():
            built = self._node(node)
            if built is not None:
                nodes[node.name] = built
        out["outputs"] = self._outputs()
        out["models"] = self.models.declarations()
        out["nodes"] = nodes
        return None if d.failed else out

    # -- inputs and outputs ------------------------------------------------------------------------

    def _inputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        raw = self.dag.data.get("inputs") or {}
        for pf_name, decl in raw.items():
            path = ("inputs", pf_name)
            name = self._rename(pf_name, path, "input")
            self.inputs[pf_name] = name
            decl = decl if isinstance(decl, dict) else {}
            entry: dict[str, Any] = {"type": self._type(decl.get("type", "string"), (*path, "type"))}
            if isinstance(decl.get("enum"), list) and entry["type"] == "str":
                entry["type"] = "enum[" + ", ".join(f'"{v}"' for v in decl["enum"]) + "]"
            if decl.get("default") is not None:
                entry["default"] = decl["default"]
            if isinstance(decl.get("description"), str):
                entry["description"] = decl["description"]
            for key in decl:
                if key in ("is_chat_input", "is_chat_history"):
                    self.dag.report(
                        "import-dropped",
                        f"'{key}' is dropped: flowc has no chat UI",
                        (*path, key),
                        key=True,
                        severity="note",
                    )
                elif key not in ("type", "default", "description", "enum"):
                    self.dag.report("import-unsupported", f"unknown input key '{key}'", (*path, key), key=True)
            out[name] = entry
        return out

    def _type(self, pf_type: Any, path: tuple[str | int, ...]) -> str:
        t = _TYPES.get(str(pf_type))
        if t is None:
            self.dag.report(
                "import-unsupported",
                f"the Prompt flow type '{pf_type}' has no flowc counterpart",
                path,
                hint="flowc types: string → str, int, double → float, bool, list → list[any], object → any",
            )
            return "any"
        return t

    def _outputs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for pf_name, decl in (self.dag.data.get("outputs") or {}).items():
            path = ("outputs", pf_name)
            name = self._rename(pf_name, path, "output")
            decl = decl if isinstance(decl, dict) else {}
            ref = parse_reference(decl.get("reference"))
            if ref is None:
                self.dag.report(
                    "import-unsupported",
                    "an output must reference a node or an input, like ${node.output}",
                    (*path, "reference"),
                )
                continue
            binding = self._binding(ref, (*path, "reference"))
            if binding is None:
                continue
            entry: dict[str, Any] = {"source": binding}
            if "type" in decl and str(decl["type"]) != "object":
                entry["type"] = self._type(decl["type"], (*path, "type"))
            if isinstance(decl.get("description"), str):
                entry["description"] = decl["description"]
            for key in decl:
                if key in ("is_chat_output",):
                    self.dag.report(
                        "import-dropped",
                        f"'{key}' is dropped: flowc has no chat UI",
                        (*path, key),
                        key=True,
                        severity="note",
                    )
                elif key == "evaluation_only":
                    self.dag.report(
                        "import-dropped",
                        "'evaluation_only' is dropped: the output is kept",
                        (*path, key),
                        key=True,
                        severity="note",
                    )
                elif key not in ("type", "reference", "description"):
                    self.dag.report("import-unsupported", f"unknown output key '{key}'", (*path, key), key=True)
            out[name] = entry
        return out

    # -- names -------------------------------------------------------------------------------------

    def _rename(self, pf_name: str, path: tuple[str | int, ...], what: str) -> str:
        name = flowc_name(pf_name)
        taken = set(self.inputs.values()) | {n.name for n in self.nodes.values()}
        if what == "node" and name in taken:
            name = f"{name}_node"
        if name != pf_name:
            self.dag.report(
                "import-dropped",
                f"the {what} '{pf_name}' is named '{name}' in flowc",
                path,
                key=True,
                severity="note",
                hint="flowc names are letters, digits and '_', not a reserved word, and unique among inputs and nodes",
            )
        return name

    # -- nodes -------------------------------------------------------------------------------------

    def _collect_nodes(self) -> None:
        d = self.dag
        variants = d.data.get("node_variants") or {}
        for i, raw in enumerate(d.data.get("nodes") or []):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                d.report("import-unsupported", "a node needs a 'name'", ("nodes", i))
                continue
            pf_name = raw["name"]
            path: tuple[str | int, ...] = ("nodes", i)
            data = raw
            if raw.get("use_variants") is True:
                spec = variants.get(pf_name) if isinstance(variants, dict) else None
                default = spec.get("default_variant_id") if isinstance(spec, dict) else None
                chosen = (spec.get("variants") or {}).get(default) if isinstance(spec, dict) else None
                if not isinstance(chosen, dict) or not isinstance(chosen.get("node"), dict):
                    d.report(
                        "import-unsupported",
                        f"node '{pf_name}' uses variants, but node_variants has no default variant for it",
                        (*path, "use_variants"),
                    )
                    continue
                others = [v for v in (spec or {}).get("variants", {}) if v != default]
                if others:
                    d.report(
                        "import-dropped",
                        f"node '{pf_name}' keeps its default variant '{default}'; "
                        f"{', '.join(repr(o) for o in others)} are dropped",
                        ("node_variants", pf_name, "default_variant_id"),
                        severity="warning",
                        hint="flowc has no variants: compare prompts with `flowc eval` on copies of the spec, "
                        "or let `flowc optimize` search for a better one",
                    )
                path = ("node_variants", pf_name, "variants", str(default), "node")
                data = {**chosen["node"], "name": pf_name}
            name = self._rename(pf_name, ("nodes", i, "name"), "node")
            self.nodes[pf_name] = _Node(pf_name, name, path, data)
        for n in self.nodes.values():
            self._classify(n)

    def _classify(self, n: _Node) -> None:
        d = self.dag
        kind = n.data.get("type")
        raw = n.data.get("source")
        source: dict[str, Any] = raw if isinstance(raw, dict) else {}
        if kind == "llm":
            n.kind = "llm"
        elif kind == "python" and source.get("type") == "code":
            path = self.base / str(source.get("path", ""))
            found = read_tool_file(path)
            if isinstance(found, str):
                d.report("import-unsupported", f"python node '{n.pf_name}': {found}", (*n.path, "source", "path"))
                n.kind = "refused"
                return
            n.kind, n.tool = "python", found
            self.tools.append((found.name, str(source.get("path"))))
        elif kind == "python" and source.get("type") == "package":
            d.report(
                "import-unsupported",
                f"the package tool '{source.get('tool')}' cannot be converted: flowc calls only tools registered "
                "by name",
                (*n.path, "source", "tool"),
                hint="wrap the call in a Python function, register it (flowc.plugins entry point or ToolRegistry) "
                "and use a python node in the flow",
            )
            n.kind = "refused"
        elif kind == "prompt":
            d.report(
                "import-unsupported",
                f"the prompt node '{n.pf_name}' cannot be converted: flowc renders templates only inside llm nodes",
                (*n.path, "type"),
                hint="inline the template into the llm node that reads its output",
            )
            n.kind = "refused"
        else:
            d.report(
                "import-unsupported",
                f"a node of type '{kind}' cannot be converted",
                (*n.path, "type"),
                hint="flowc converts llm and python (code) nodes",
            )
            n.kind = "refused"

    def _refs(self) -> list[tuple[Reference, tuple[str | int, ...]]]:
        """Every reference in the flow, with its place."""
        out = []
        for n in self.nodes.values():
            for k, v in (n.data.get("inputs") or {}).items():
                ref = parse_reference(v)
                if ref is not None:
                    out.append((ref, (*n.path, "inputs", k)))
        for k, decl in (self.dag.data.get("outputs") or {}).items():
            ref = parse_reference(decl.get("reference") if isinstance(decl, dict) else None)
            if ref is not None:
                out.append((ref, ("outputs", k, "reference")))
        return out

    def _plan_ports(self) -> None:
        """Name each node's flowc output ports from what the flow reads of it: an llm node's text is
        `text`; a python node's whole result `result`, or one port per key read (`${n.output.key}`)."""
        for n in self.nodes.values():
            if n.kind == "llm":
                n.ports[""] = "text"
        for ref, _path in self._refs():
            target = self.nodes.get(ref.node) if ref.node else None
            if target is None or target.kind != "python":
                continue
            target.ports[ref.key or ""] = flowc_name(ref.key) if ref.key else "result"
        for n in self.nodes.values():
            if n.kind == "python" and "" in n.ports and len(n.ports) > 1:
                self.dag.report(
                    "import-unsupported",
                    f"the flow reads both the whole output of '{n.pf_name}' and keys of it "
                    f"({', '.join(k for k in n.ports if k)})",
                    (*n.path, "name"),
                    hint="read only keys (${node.output.key}) or only the whole output",
                )
            if n.kind == "python" and not n.ports:
                n.ports[""] = "result"

    def _plan_routes(self) -> None:
        """`activate: {when: ${router.output}, is: NAME}` on nodes whose `when` is an llm node's answer
        makes that llm node a flowc router choosing among the nodes it activates."""
        for n in self.nodes.values():
            act = n.data.get("activate")
            if act is None:
                continue
            path = (*n.path, "activate")
            ref = parse_reference(act.get("when")) if isinstance(act, dict) else None
            router = self.nodes.get(ref.node) if ref is not None and ref.node else None
            if ref is None or router is None or ref.key:
                self.dag.report(
                    "import-unsupported",
                    "'activate.when' must reference a node's whole output, like ${classify.output}",
                    (*path, "when"),
                )
                continue
            if router.kind != "llm":
                self.dag.report(
                    "import-unsupported",
                    f"node '{n.pf_name}' is activated by the output of the {router.kind} node '{router.pf_name}': "
                    "flowc chooses the next node only by an llm node's answer (a router)",
                    (*path, "when"),
                    hint=f"let the llm node before '{router.pf_name}' answer with the name of the node to run; "
                    "flowc then routes on its answer",
                )
                continue
            value = act.get("is")
            if not isinstance(value, str) or value.strip().lower() != n.pf_name.lower():
                self.dag.report(
                    "import-unsupported",
                    f"'activate.is' is {value!r}, but a flowc router's answer names the node it runs ('{n.name}')",
                    (*path, "is"),
                    hint=f"rename node '{n.pf_name}' to the value, or make '{router.pf_name}' answer '{n.pf_name}'",
                )
                continue
            router.routes_to.append(n.name)
            n.activated_by = router.name
        for n in self.nodes.values():
            if n.routes_to:
                n.ports[""] = ROUTE_PORT

    def _binding(self, ref: Reference, path: tuple[str | int, ...]) -> Expr | None:
        d = self.dag
        if ref.node is None:
            if ref.name not in self.inputs:
                d.report("import-unsupported", f"the flow has no input '{ref.name}'", path)
                return None
            return Ref(0, None, self.inputs[ref.name])
        n = self.nodes.get(ref.node)
        if n is None:
            d.report("import-unsupported", f"the flow has no node '{ref.node}'", path)
            return None
        if ref.name != "output" or ref.deeper or (ref.key and n.kind == "llm"):
            d.report(
                "import-unsupported",
                "only ${node.output} (and ${node.output.key} of a python node) can be converted",
                path,
            )
            return None
        if n.kind == "refused":
            return None
        port = n.ports.get(ref.key or "", "result")
        value: Expr = Ref(0, n.name, port)
        if n.activated_by:
            # Prompt flow gives a skipped node's output as None; in flowc the value never comes, so
            # read it with a null fallback, taken once nothing else can run.
            value = Coalesce(0, (value, Lit(0, None)))
        return value

    def _node(self, n: _Node) -> dict[str, Any] | None:
        for key, allowed in _NODE_NOTES.items():
            if key in n.data and (allowed is None or n.data[key] in allowed):
                self.dag.report(
                    "import-dropped",
                    f"'{key}' is dropped: it changes nothing in flowc",
                    (*n.path, key),
                    key=True,
                    severity="note",
                )
        if n.data.get("aggregation") is True:
            self.dag.report(
                "import-unsupported",
                f"the aggregation node '{n.pf_name}' cannot be converted: flowc runs one example at a time",
                (*n.path, "aggregation"),
                hint="score runs with a metric (`metric` in the spec, `flowc eval --metric`)",
            )
            return None
        if n.kind == "llm":
            from flowc.interop.promptflow.llm import llm_node

            return llm_node(self, n)
        if n.kind == "python":
            return self._tool_node(n)
        return None

    def _tool_node(self, n: _Node) -> dict[str, Any]:
        assert n.tool is not None
        inputs: dict[str, Expr] = {}
        for key, value in (n.data.get("inputs") or {}).items():
            path = (*n.path, "inputs", key)
            annotation = n.tool.params.get(key, "")
            if key not in n.tool.params:
                self.dag.report("import-unsupported", f"'{n.tool.name}' has no parameter '{key}'", path, key=True)
                continue
            if is_connection(annotation):
                self.dag.report(
                    "import-unsupported",
                    f"the connection parameter '{key}' of '{n.tool.name}' cannot be converted: flowc passes no "
                    "connections to tools",
                    path,
                    hint="let the tool read its credentials from the environment",
                )
                continue
            expr = self.input_expr(value, path, annotation)
            if expr is not None:
                inputs[flowc_name(key)] = expr
        self._extra_keys(n, ("name", "type", "source", "inputs", "activate"))
        return {
            "kind": "tool",
            "function": n.tool.name,
            "inputs": {k: str(v) for k, v in inputs.items()},
            "outputs": dict.fromkeys(n.ports.values(), "any"),
        }

    def input_expr(self, value: Any, path: tuple[str | int, ...], annotation: str = "") -> Expr | None:
        ref = parse_reference(value)
        if ref is not None:
            return self._binding(ref, path)
        if isinstance(value, dict | list):
            self.dag.report(
                "import-unsupported",
                "a list or object literal cannot be bound to a node input in flowc",
                path,
                hint="produce the value in a python node and bind its output",
            )
            return None
        return Lit(0, convert_literal(value, annotation))

    def _extra_keys(self, n: _Node, known: tuple[str, ...]) -> None:
        for key in n.data:
            if key not in known and key not in _NODE_NOTES and key != "aggregation":
                self.dag.report(
                    "import-unsupported", f"the node key '{key}' cannot be converted", (*n.path, key), key=True
                )

    def prompt_file(self, rel: str) -> SourceFile | None:
        path = self.base / rel
        try:
            source = SourceFile(str(path), path.read_text(encoding="utf-8"))
        except OSError:
            return None
        self.dag.sources[source.path] = source
        return source

    def add(self, diags: list[Diagnostic]) -> None:
        self.dag.diagnostics.extend(diags)
