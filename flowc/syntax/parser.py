"""Parse `.flow` text into the canonical spec.

The grammar (flowc/grammars/flow.lark, LALR, positions propagated) is built once and cached.
The walk below only *constructs* plain data and a span table — validation happens in the spec
layer, exactly as for YAML — so syntax and shape errors come out the same way from both fronts.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from functools import cache
from pathlib import Path
from typing import Any

import lark
from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedEOF, UnexpectedInput, UnexpectedToken

from flowc.errors import Diagnostic, SpecErrors
from flowc.source import SourceFile, Span
from flowc.spec.build import SpanTable, build_pipeline
from flowc.spec.models import Pipeline
from flowc.spec.recognise import looks_like_flow, not_a_spec, shown_sources
from flowc.syntax.diagnostics import open_brackets, syntax_diagnostic, too_deep

MAX_BYTES = 4_000_000
MAX_DEPTH = 48


@cache
def grammar() -> Lark:
    return Lark.open_from_package(
        "flowc",
        "flow.lark",
        ("grammars",),
        parser="lalr",
        propagate_positions=True,
        maybe_placeholders=False,
        start=["start", "binding", "cond"],
        cache=_parser_cache() or False,
    )


def _parser_cache() -> str | None:
    """Where lark keeps the analysed grammar (building the LALR tables is ~0.3 s of every
    command): a file in flowc's cache folder, which only this user writes — lark's own default,
    a shared temp folder, would load a pickle anyone could plant. Lark checks the grammar's
    hash inside the file and rebuilds it when the grammar or lark changed. None (no cache)
    when the folder cannot be made."""
    root = Path(os.environ.get("FLOWC_CACHE_DIR") or Path.home() / ".cache" / "flowc") / "grammar"
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return None
    return str(root / f"flow-lark{lark.__version__}-py{sys.version_info[0]}{sys.version_info[1]}.pickle")


def parse_flow(text: str, path: str = "<flow>") -> Pipeline:
    """Read a `.flow` spec; raises SpecErrors with every problem found, each located."""
    source = SourceFile(path, text)
    data, spans, diags = parse_flow_data(source)
    if data is None:
        raise SpecErrors(diags, shown_sources(diags, path, source))
    try:
        spec = build_pipeline(data, spans, source)
    except SpecErrors as e:
        raise SpecErrors(diags + e.diagnostics, {path: source}) from None
    if any(d.severity == "error" for d in diags):
        raise SpecErrors(diags, {path: source})
    return spec


def parse_flow_data(source: SourceFile) -> tuple[dict[str, Any] | None, SpanTable, list[Diagnostic]]:
    """Text → (plain data shaped like Pipeline.dump(), span table, diagnostics)."""
    path, text = source.path, source.text
    if len(text) > MAX_BYTES:
        return (
            None,
            {},
            [
                Diagnostic(
                    "input-too-large",
                    f"the spec is {len(text):,} characters; the limit is {MAX_BYTES:,}",
                    Span(path, 1, 1),
                    hint="split it into subflows with 'import'",
                )
            ],
        )
    deep = too_deep(text, MAX_DEPTH)
    if deep is not None:
        return (
            None,
            {},
            [
                Diagnostic(
                    "nesting-too-deep",
                    f"brackets nest deeper than {MAX_DEPTH} levels",
                    source.span_at(deep),
                    hint="flatten the structure; no spec needs this depth",
                )
            ],
        )
    if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        # lark would call this an unexpected end "in the middle of a declaration"; say what it is
        return (
            None,
            {},
            [
                Diagnostic(
                    "unexpected-eof",
                    "the file holds no pipeline",
                    Span(path, 1, 1, 1, 2),
                    hint="a spec is 'pipeline <name> { ... }', after any 'import' lines",
                )
            ],
        )
    if not looks_like_flow(text):
        return None, {}, [not_a_spec(path, "it does not begin with 'pipeline' or 'import'")]
    if text.startswith("\ufeff"):  # a byte-order mark, as some editors write: a space, so columns stay put
        text = " " + text[1:]
    try:
        tree = grammar().parse(text, start="start")
    except UnexpectedInput as e:
        # the statements before the error may hold mistakes only the walk finds (a bad escape,
        # 'key = value', a duplicate): report them too, so the file's first error comes first
        at_end = isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END")
        line = text.count("\n") + 2 if at_end else e.line
        return None, {}, [*_diagnostics_before(line, source), syntax_diagnostic(e, source)]
    walker = _Walker(source)
    data = walker.start(tree)
    return data, walker.spans, walker.diags


def _diagnostics_before(line: int, source: SourceFile) -> list[Diagnostic]:
    """What the walk finds in the lines before line `line`, read as a file that ends there (its open
    brackets closed), or nothing if even that does not parse."""
    prefix = "\n".join(source.text.split("\n")[: max(line - 1, 0)])
    if not prefix.strip():
        return []
    closing = {"{": "}", "[": "]", "(": ")"}
    text = prefix + "".join("\n" + closing[prefix[i]] for i in reversed(open_brackets(prefix))) + "\n"
    try:
        tree = grammar().parse(text, start="start")
    except UnexpectedInput:
        return []
    walker = _Walker(SourceFile(source.path, text))
    walker.start(tree)
    return walker.diags


def _span(path: str, node: Tree | Token) -> Span:
    if isinstance(node, Token):
        if node.type == "STRING":  # point at the text, past the opening quote
            return Span(path, node.line or 1, (node.column or 1) + 1, node.end_line, (node.end_column or 2) - 1)
        return Span(path, node.line or 1, node.column or 1, node.end_line, node.end_column)
    meta = node.meta
    if getattr(meta, "empty", True):
        return Span(path, 1, 1)
    return Span(path, meta.line, meta.column, meta.end_line, meta.end_column)


def _string(tok: Token | Tree) -> str:
    assert isinstance(tok, Token)
    if tok.type == "LONG_STRING":
        return long_string_value(str(tok))
    return str(json.loads(str(tok)))


def long_string_value(raw: str) -> str:
    """The text of a triple-quoted string: first newline and last indented line dropped, dedented."""
    body = raw[3:-3]
    if body.startswith("\n"):
        body = body[1:]
    head, sep, tail = body.rpartition("\n")
    if sep and tail.strip() == "":
        body = head
    body = body.replace('\\"', '"').replace("\\\\", "\\")
    return textwrap.dedent(body)


class _Walker:
    """Walks the lark tree, building plain data and recording each value's span by path."""

    def __init__(self, source: SourceFile) -> None:
        self.source = source
        self.path = source.path
        self.spans: SpanTable = {}
        self.diags: list[Diagnostic] = []

    # -- helpers ---------------------------------------------------------------------------------

    def text(self, node: Tree | Token) -> str:
        if isinstance(node, Token):
            return str(node)
        return self.source.text[node.meta.start_pos : node.meta.end_pos]

    def put(
        self,
        container: dict[str, Any],
        key: str,
        value: Any,
        p: tuple[str | int, ...],
        key_node: Tree | Token,
        value_node: Tree | Token | None = None,
        what: str = "",
    ) -> bool:
        """Set container[key] unless it is there already (then report a duplicate)."""
        full = (*p, key)
        if key in container:
            first = self.spans.get((*full, "@key"))
            self.diags.append(
                Diagnostic(
                    "duplicate-name",
                    f"{what or 'name'} '{key}' is declared twice",
                    _span(self.path, key_node),
                    hint="rename one of them",
                    notes=(f"first declared at {first}",) if first else (),
                )
            )
            return False
        container[key] = value
        self.spans[(*full, "@key")] = _span(self.path, key_node)
        self.spans[full] = _span(self.path, value_node if value_node is not None else key_node)
        return True

    def string(self, tok: Token | Tree) -> str:
        """The value of a string token; a bad escape (`\\q`) is reported, and the raw text kept."""
        try:
            return _string(tok)
        except json.JSONDecodeError as e:
            assert isinstance(tok, Token)
            line, col = tok.line or 1, (tok.column or 1) + e.pos
            self.diags.append(
                Diagnostic(
                    "syntax-error",
                    f"invalid escape in a string: '{str(tok)[e.pos : e.pos + 2]}'",
                    Span(self.path, line, col, line, col + 2),
                    hint='escapes are \\" \\\\ \\n \\t and \\uXXXX; write \\\\ for a backslash',
                )
            )
            return str(tok)[1:-1]

    def value(self, node: Tree | Token, p: tuple[str | int, ...]) -> Any:
        self.spans[p] = _span(self.path, node)
        if isinstance(node, Token):
            if node.type in ("STRING", "LONG_STRING"):
                return self.string(node)
            if node.type == "SIGNED_NUMBER":
                s = str(node)
                return float(s) if any(c in s for c in ".eE") else int(s)
            if node.type == "CONST":
                return {"true": True, "false": False, "null": None}[str(node)]
            return str(node)  # a bare NAME is a string
        if node.data == "list":
            return [self.value(c, (*p, i)) for i, c in enumerate(node.children)]
        if node.data == "record":
            out: dict[str, Any] = {}
            for f in node.children:
                k, v = f.children
                key = self.string(k) if isinstance(k, Token) and k.type == "STRING" else str(k)
                if self.put(out, key, None, p, k, v, "field"):
                    out[key] = self.value(v, (*p, key))
            return out
        raise AssertionError(node.data)

    # -- the file ----------------------------------------------------------------------------------

    def start(self, tree: Tree) -> dict[str, Any]:
        imports: dict[str, Any] = {}
        pipe: Tree | None = None
        for child in tree.children:
            if isinstance(child, Tree) and child.data == "import_decl":
                path_tok, alias = child.children
                self.put(imports, str(alias), self.string(path_tok), ("imports",), alias, path_tok, "import")
            elif isinstance(child, Tree) and child.data == "pipeline":
                pipe = child
        assert pipe is not None
        data = self.pipeline(pipe)
        if imports:
            data = {
                "pipeline": data.pop("pipeline"),
                **({"description": data.pop("description")} if "description" in data else {}),
                "imports": imports,
                **data,
            }
        return data

    def pipeline(self, tree: Tree) -> dict[str, Any]:
        name, *stmts = tree.children
        data: dict[str, Any] = {"pipeline": str(name)}
        self.spans[("pipeline",)] = _span(self.path, name)
        self.spans[()] = _span(self.path, name)
        sections: dict[str, dict[str, Any]] = {}

        def section(key: str) -> dict[str, Any]:
            if key not in sections:
                sections[key] = {}
            return sections[key]

        for st in stmts:
            kind = st.data
            if kind == "prop":
                k, v = st.children
                self.put(data, str(k), self.value(v, (str(k),)), (), k, v, "property")
            elif kind == "input_decl":
                self.input_decl(st, section("inputs"))
            elif kind == "output_decl":
                self.output_decl(st, section("outputs"))
            elif kind == "type_decl":
                n, t = st.children
                self.put(section("types"), str(n), self.text(t), ("types",), n, t, "type")
            elif kind in ("model_decl", "corpus_decl"):
                n, ident, *blk = st.children
                sec, field = ("models", "id") if kind == "model_decl" else ("corpora", "path")
                entry: dict[str, Any] = {field: self.string(ident)}
                if self.put(section(sec), str(n), entry, (sec,), n, n, sec[:-1] if sec == "models" else "corpus"):
                    self.spans[(sec, str(n), field)] = _span(self.path, ident)
                    if blk:
                        self.props(blk[0], entry, (sec, str(n)))
            elif kind == "node_decl":
                n, k, blk = st.children
                node: dict[str, Any] = {"kind": str(k)}
                if self.put(section("nodes"), str(n), node, ("nodes",), n, n, "node"):
                    self.spans[("nodes", str(n), "kind")] = _span(self.path, k)
                    self.node_block(blk, node, ("nodes", str(n)))
            elif kind == "loop_decl":
                n, src, dst, mx, *cond = st.children
                loop: dict[str, Any] = {"from": str(src), "to": str(dst), "max": int(str(mx))}
                p = ("loops", str(n))
                if self.put(section("loops"), str(n), loop, ("loops",), n, n, "loop"):
                    for key, tok in (("from", src), ("to", dst), ("max", mx)):
                        self.spans[(*p, key)] = _span(self.path, tok)
                    if cond:
                        loop["while"] = self.text(cond[0])
                        self.spans[(*p, "while")] = _span(self.path, cond[0])
            elif kind == "metric_decl":
                n, fn, *kwargs = st.children
                metric: dict[str, Any] = {"fn": str(fn)}
                p = ("metrics", str(n))
                if self.put(section("metrics"), str(n), metric, ("metrics",), n, n, "metric"):
                    self.spans[(*p, "fn")] = _span(self.path, fn)
                    for kw in kwargs:
                        k, v = kw.children
                        self.put(metric, str(k), str(v), p, k, v, "argument")
            elif kind == "test_decl":
                n, blk = st.children
                test: dict[str, Any] = {}
                if self.put(section("tests"), str(n), test, ("tests",), n, n, "test"):
                    self.test_block(blk, test, ("tests", str(n)))
        order = ("types", "inputs", "outputs", "models", "corpora", "nodes", "loops", "metrics", "tests")
        for key in order:
            if key in sections:
                data[key] = sections[key]
        return data

    def input_decl(self, st: Tree, inputs: dict[str, Any]) -> None:
        n, t, *rest = st.children
        entry: dict[str, Any] = {"type": self.text(t)}
        p = ("inputs", str(n))
        if not self.put(inputs, str(n), entry, ("inputs",), n, n, "input"):
            return
        self.spans[(*p, "type")] = _span(self.path, t)
        for r in rest:
            if isinstance(r, Tree) and r.data == "block":
                self.props(r, entry, p)
            else:
                entry["default"] = self.value(r, (*p, "default"))

    def output_decl(self, st: Tree, outputs: dict[str, Any]) -> None:
        n, *rest = st.children
        entry: dict[str, Any] = {}
        p = ("outputs", str(n))
        if not self.put(outputs, str(n), entry, ("outputs",), n, n, "output"):
            return
        for r in rest:
            if r.data == "type":
                entry["type"] = self.text(r)
                self.spans[(*p, "type")] = _span(self.path, r)
            elif r.data == "binding":
                entry["source"] = self.text(r)
                self.spans[(*p, "source")] = _span(self.path, r)
            else:
                self.props(r, entry, p)
        # canonical key order: source, type, description
        ordered: dict[str, Any] = {k: entry[k] for k in ("source", "type", "description") if k in entry}
        ordered.update({k: v for k, v in entry.items() if k not in ordered})
        entry.clear()
        entry.update(ordered)

    def keyword_span(self, st: Tree, word: str) -> Span:
        """The span of the keyword that starts statement `st`."""
        return Span(self.path, st.meta.line, st.meta.column, st.meta.line, st.meta.column + len(word))

    def equals_prop(self, st: Tree) -> tuple[Token, Tree | Token]:
        """`key = value` where `key: value` belongs: report it, and return (key, value) so the
        value is kept (no cascade of missing-field errors for a property that is there)."""
        k, v = st.children
        assert isinstance(k, Token)
        eq = self.source.text.find("=", k.end_pos or 0)
        self.diags.append(
            Diagnostic(
                "syntax-error",
                "properties are written 'key: value', not 'key = value'",
                self.source.span_at(eq) if eq >= 0 else _span(self.path, k),
                hint=f"write '{k}: ...'",
            )
        )
        return k, v

    def props(self, blk: Tree, entry: dict[str, Any], p: tuple[str | int, ...]) -> None:
        for st in blk.children:
            if st.data == "given":
                gk, gv = self.equals_prop(st)
                self.put(entry, str(gk), self.value(gv, (*p, str(gk))), p, gk, gv, "property")
                continue
            if st.data != "prop":
                what = {
                    "bind": "an input binding",
                    "node_output": "an output",
                    "demo": "a demo",
                    "body": "a 'do:' body",
                    "expect": "an expectation",
                    "given": "a test input",
                }[st.data]
                self.diags.append(
                    Diagnostic(
                        "syntax-error",
                        f"{what} is not allowed here",
                        _span(self.path, st),
                        hint="only 'key: value' properties go in this block",
                    )
                )
                continue
            k, v = st.children
            if str(k) in entry:
                self.put(entry, str(k), None, p, k, v, "property")
                continue
            self.put(entry, str(k), self.value(v, (*p, str(k))), p, k, v, "property")

    def node_block(self, blk: Tree, node: dict[str, Any], p: tuple[str | int, ...]) -> None:
        for st in blk.children:
            kind = st.data
            if kind == "prop":
                k, v = st.children
                self.put(node, str(k), self.value(v, (*p, str(k))), p, k, v, "property")
            elif kind == "bind":
                k, b = st.children
                if str(k) == "over" and node.get("kind") == "map":
                    self.put(node, "over", self.text(b), p, k, b, "property")
                else:
                    node.setdefault("inputs", {})
                    self.put(node["inputs"], str(k), self.text(b), (*p, "inputs"), k, b, "input binding")
            elif kind == "node_output":
                k, t = st.children
                if "outputs" not in node:  # so "this kind has no outputs" points at the first 'output'
                    self.spans[(*p, "outputs", "@key")] = self.keyword_span(st, "output")
                node.setdefault("outputs", {})
                self.put(node["outputs"], str(k), self.text(t), (*p, "outputs"), k, t, "output")
            elif kind == "demo":
                if "demos" not in node:
                    self.spans[(*p, "demos", "@key")] = self.keyword_span(st, "demo")
                demos = node.setdefault("demos", [])
                i = len(demos)
                demos.append(self.value(st.children[0], (*p, "demos", i)))
            elif kind == "given":
                k, v = self.equals_prop(st)
                self.put(node, str(k), self.value(v, (*p, str(k))), p, k, v, "property")
            elif kind == "body" and node.get("kind") != "map":
                self.diags.append(
                    Diagnostic(
                        "syntax-error",
                        f"only a map node has a 'do:' body; this node is '{node.get('kind')}'",
                        Span(self.path, st.meta.line, st.meta.column, st.meta.line, st.meta.column + 2),  # at 'do'
                        hint="make the node 'map' with 'over <- <list>', or move the body into a node of its own",
                    )
                )
            elif kind == "body":
                k, b = st.children
                inner: dict[str, Any] = {"kind": str(k)}
                if self.put(node, "body", inner, p, st, k, "body"):
                    self.spans[(*p, "body", "kind")] = _span(self.path, k)
                    self.node_block(b, inner, (*p, "body"))
            else:
                self.diags.append(
                    Diagnostic(
                        "syntax-error",
                        f"'{self.text(st).split()[0]}' is not allowed in a node",
                        _span(self.path, st),
                        hint="a node holds 'key: value', 'port <- binding', "
                        "'output name: type', 'demo {...}' and, in a map, 'do: kind {...}'",
                    )
                )

    def test_block(self, blk: Tree, test: dict[str, Any], p: tuple[str | int, ...]) -> None:
        for st in blk.children:
            if st.data == "given":
                k, v = st.children
                test.setdefault("inputs", {})
                self.put(
                    test["inputs"], str(k), self.value(v, (*p, "inputs", str(k))), (*p, "inputs"), k, v, "test input"
                )
            elif st.data == "expect":
                out, op, v = st.children
                exp = test.setdefault("expect", [])
                i = len(exp)
                exp.append({"output": str(out), "op": str(op), "value": self.value(v, (*p, "expect", i, "value"))})
                self.spans[(*p, "expect", i)] = _span(self.path, st)
                self.spans[(*p, "expect", i, "output")] = _span(self.path, out)
            elif st.data == "prop":
                # a test has no properties: `question: "x"` is a test input written like one
                k, v = st.children
                self.diags.append(
                    Diagnostic(
                        "syntax-error",
                        "test inputs are written 'name = value', not 'name: value'",
                        _span(self.path, k),
                        hint=f"write '{k} = ...'",
                    )
                )
                test.setdefault("inputs", {})
                self.put(
                    test["inputs"], str(k), self.value(v, (*p, "inputs", str(k))), (*p, "inputs"), k, v, "test input"
                )
            else:
                self.diags.append(
                    Diagnostic(
                        "syntax-error",
                        "a test holds 'input = value' and 'expect output op value'",
                        _span(self.path, st),
                        hint='e.g. question = "..." and expect answer contains "..."',
                    )
                )
