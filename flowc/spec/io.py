"""YAML and JSON front end: text → (data, span table) → Pipeline, and Pipeline → YAML text.

PyYAML's composer gives every node its position; we construct plain values ourselves so that each
value's path gets a Span, duplicate keys are caught (PyYAML silently keeps the last) and
pathological documents (deep nesting, alias bombs, huge files) fail fast with a clear error.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from flowc.errors import Diagnostic, ErrorCode, SpecErrors
from flowc.source import SourceFile, Span
from flowc.spec.build import SpanTable, build_pipeline
from flowc.spec.models import Pipeline
from flowc.spec.recognise import looks_like_yaml_spec, not_a_spec, shown_sources
from flowc.spec.yaml_schema import CoreDumper, CoreLoader

MAX_BYTES = 4_000_000
MAX_DEPTH = 64
MAX_NODES = 200_000


class _Limits(Exception):
    def __init__(self, code: ErrorCode, message: str, node: yaml.Node) -> None:
        super().__init__(message)
        self.code, self.message, self.node = code, message, node


def _span(path: str, node: yaml.Node) -> Span:
    start, end = node.start_mark, node.end_mark
    shift = 1 if isinstance(node, yaml.ScalarNode) and node.style in ('"', "'") else 0
    return Span(path, start.line + 1, start.column + 1 + shift, end.line + 1, end.column + 1 - shift)


#: Flow-collection depth at which the text is refused before PyYAML reads it. Far above
#: MAX_DEPTH, so brackets inside plain text can hardly trip it; the exact limit is applied later.
PRESCAN_DEPTH = 1000


def _flow_too_deep(text: str) -> int | None:
    """Offset where '[' / '{' nest deeper than PRESCAN_DEPTH, skipping quoted text and comments."""
    depth, i, n = 0, 0, len(text)
    while i < n:
        c = text[i]
        if c == '"' or c == "'":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if (c == '"' and text[j] == "\\") else 1
            i = j + 1
            continue
        if c == "#" and (i == 0 or text[i - 1] in " \t\n"):
            nl = text.find("\n", i)
            i = n if nl < 0 else nl
            continue
        if c in "[{":
            depth += 1
            if depth > PRESCAN_DEPTH:
                return i
        elif c in "]}" and depth:
            depth -= 1
        i += 1
    return None


def _too_many_values(root: yaml.Node) -> _Limits | None:
    """The limit the document passes once its aliases are expanded, found without expanding them:
    each distinct node's expanded size is computed once (aliases share nodes)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > MAX_DEPTH:
            raise _Limits("nesting-too-deep", f"the document nests deeper than {MAX_DEPTH} levels", node)
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(v, depth + 1) for _k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(v, depth + 1) for v in node.value)
        sizes[id(node)] = total
        if total > MAX_NODES:
            raise _Limits("input-too-large", f"the document expands to more than {MAX_NODES:,} values (aliases?)", node)
        return total

    try:
        size(root, 0)
    except _Limits as e:
        return e
    return None


def _limit_hint(code: ErrorCode) -> str:
    if code == "yaml-syntax":
        return "remove the tag: a spec is plain YAML (strings, numbers, booleans, lists, mappings)"
    if code == "input-too-large":
        return "simplify the document; anchors and aliases that expand are not supported"
    return f"keep nesting under {MAX_DEPTH} levels; no spec needs this depth"


def _mark_span(source: SourceFile, line: int, column: int) -> Span:
    """A one-character span at a 0-based YAML mark, moved back onto the last line when the mark
    is past the end of the text (PyYAML's '<stream end>'), so the excerpt shows something."""
    lines = source.text.splitlines()
    if line >= len(lines) and lines:
        line = len(lines) - 1
        while line > 0 and not lines[line].strip():
            line -= 1
        column = len(lines[line])
    return Span(source.path, line + 1, column + 1, line + 1, column + 2)


def load_yaml_data(source: SourceFile, *, prefix: bool = False) -> tuple[Any, SpanTable, list[Diagnostic]]:
    """Parse YAML/JSON text into plain data and a span table; problems come back as diagnostics.

    `prefix`: the text is the part of a file before its syntax error; only what is found in a
    prefix that parses counts (no syntax error of its own).
    """
    path = source.path
    if len(source.text) > MAX_BYTES:
        return (
            None,
            {},
            [
                Diagnostic(
                    "input-too-large",
                    f"the spec is {len(source.text):,} characters; the limit is {MAX_BYTES:,}",
                    Span(path, 1, 1),
                    hint="split it into subflows with 'import'",
                )
            ],
        )
    deep = _flow_too_deep(source.text)
    if deep is not None:
        # PyYAML's scanner is quadratic in the depth of flow collections ([[[...]]]): thousands of
        # brackets take seconds before the composed document could be measured
        return (
            None,
            {},
            [
                Diagnostic(
                    "nesting-too-deep",
                    f"brackets nest deeper than {PRESCAN_DEPTH} levels",
                    source.span_at(deep),
                    hint=f"keep nesting under {MAX_DEPTH} levels; no spec needs this depth",
                )
            ],
        )
    loader: CoreLoader | None = None
    try:
        loader = CoreLoader(source.text)  # reads the stream's start: may raise ReaderError
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        if prefix:
            return None, {}, []
        mark = e.problem_mark or e.context_mark
        span = _mark_span(source, mark.line, mark.column) if mark else Span(path, 1, 1, 1, 2)
        # PyYAML often notices a problem a line late; its context mark says where the construct
        # it was reading began (`while parsing a flow mapping ... line 5`), which is the real place
        notes: tuple[str, ...] = ()
        if e.context and e.context_mark is not None and e.problem_mark is not None:
            cm = e.context_mark
            notes = (f"{e.context}, which starts at {path}:{cm.line + 1}:{cm.column + 1}",)
        # the lines before the construct that broke may hold problems found only after parsing
        # (duplicate keys, tags): report them too, so the file's first error comes first
        cut = min(m.line for m in (e.problem_mark, e.context_mark) if m is not None) if mark else 0
        before = "\n".join(source.text.split("\n")[:cut])
        earlier = load_yaml_data(SourceFile(path, before), prefix=True)[2] if before.strip() else []
        return (
            None,
            {},
            [
                *earlier,
                Diagnostic(
                    "yaml-syntax",
                    f"YAML: {e.problem or e.context}",
                    span,
                    hint='quote values that contain "??", ": " or "#": "a ?? b"'
                    if "'?'" in str(e.problem) or "'#'" in str(e.problem)
                    else "check indentation, colons, quotes and closing brackets here and on the lines above",
                    notes=notes,
                ),
            ],
        )
    except yaml.YAMLError as e:
        if prefix:
            return None, {}, []
        return None, {}, [Diagnostic("yaml-syntax", f"YAML: {e}", Span(path, 1, 1), hint="check the file is YAML")]
    except RecursionError:
        return (
            None,
            {},
            [
                Diagnostic(
                    "nesting-too-deep",
                    "the YAML document nests too deeply",
                    Span(path, 1, 1),
                    hint=f"keep nesting under {MAX_DEPTH} levels",
                )
            ],
        )
    finally:
        if loader is not None:
            loader.dispose()
    if loader is not None and loader.tagged:
        # `!!python/object/apply:...` on a mapping would otherwise be read as a plain mapping
        return None, {}, [_tag_diagnostic(path, node) for node in loader.tagged]
    if root is None:
        return (
            None,
            {},
            [
                Diagnostic(
                    "yaml-not-mapping",
                    "the file is empty",
                    Span(path, 1, 1),
                    hint="start the file with 'pipeline: <name>'",
                )
            ],
        )
    big = _too_many_values(root)
    if big is not None:
        # measured on the composed graph, where an alias is one shared node: an alias bomb is
        # caught in time linear in the text, before building (and spanning) its expansion
        return None, {}, [Diagnostic(big.code, big.message, _span(path, big.node), hint=_limit_hint(big.code))]
    spans: SpanTable = {}
    diags: list[Diagnostic] = []
    constructor = CoreLoader("")
    count = [0]

    def build(node: yaml.Node, p: tuple[str | int, ...], depth: int) -> Any:
        count[0] += 1
        if count[0] > MAX_NODES:
            raise _Limits("input-too-large", f"the document expands to more than {MAX_NODES:,} values (aliases?)", node)
        if depth > MAX_DEPTH:
            raise _Limits("nesting-too-deep", f"the document nests deeper than {MAX_DEPTH} levels", node)
        spans[p] = _span(path, node)
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for knode, vnode in node.value:
                if not isinstance(knode, yaml.ScalarNode):
                    diags.append(
                        Diagnostic(
                            "invalid-value",
                            "a key must be a plain name",
                            _span(path, knode),
                            hint="keys are names: letters, digits and '_'",
                        )
                    )
                    continue
                # Keys in a spec are names: keep the key's text. Constructing it would turn `true`
                # into True and `1` into 1, which are the same dict key (a false duplicate) and
                # would be reported as "must be text" at the value instead of at the key.
                key = knode.value
                if key in out:
                    diags.append(
                        Diagnostic(
                            "duplicate-name",
                            f"'{key}' is defined twice here",
                            _span(path, knode),
                            hint="YAML would silently keep the last one: rename or remove one",
                        )
                    )
                    continue
                spans[(*p, key, "@key")] = _span(path, knode)
                out[key] = build(vnode, (*p, key), depth + 1)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [build(v, (*p, i), depth + 1) for i, v in enumerate(node.value)]
        value = constructor.construct_object(node)  # core-schema scalars only: tags were refused above
        return value if isinstance(value, str | int | float | bool) or value is None else str(node.value)

    try:
        data = build(root, (), 0)
    except _Limits as e:
        return (
            None,
            {},
            [
                Diagnostic(
                    e.code,
                    e.message,
                    _span(path, e.node),
                    hint=_limit_hint(e.code),
                )
            ],
        )
    except RecursionError:
        return (
            None,
            {},
            [
                Diagnostic(
                    "nesting-too-deep",
                    "the document nests too deeply",
                    Span(path, 1, 1),
                    hint=f"keep nesting under {MAX_DEPTH} levels",
                )
            ],
        )
    return data, spans, diags


def _tag_diagnostic(path: str, node: yaml.Node) -> Diagnostic:
    tag = node.tag.replace("tag:yaml.org,2002:", "!!")
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    return Diagnostic(
        "yaml-syntax",
        f"YAML: tags are not allowed in a spec ({tag!r})",
        Span(path, line, col, line, col + 1),
        hint=_limit_hint("yaml-syntax"),
    )


def parse_yaml(text: str, path: str = "<yaml>") -> Pipeline:
    """Read a YAML or JSON spec; raises SpecErrors with every problem found."""
    source = SourceFile(path, text)
    if not looks_like_yaml_spec(text):  # before anything could quote the file
        raise SpecErrors([not_a_spec(path, "it has no 'pipeline' key")])
    data, spans, diags = load_yaml_data(source)
    if diags and data is None:
        raise SpecErrors(diags, shown_sources(diags, path, source))
    try:
        spec = build_pipeline(data, spans, source)
    except SpecErrors as e:
        raise SpecErrors(diags + e.diagnostics, {path: source}) from None
    if diags:
        raise SpecErrors(diags, {path: source})
    return spec


class _Dumper(CoreDumper):
    """Canonical layout: multi-line text as block scalars."""


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_Dumper.add_representer(str, _str_presenter)


def dump_yaml(spec: Pipeline) -> str:
    """Canonical YAML of a spec: keys in model order, defaults left out, prompts as block text."""
    return yaml.dump(spec.dump(), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def dump_json(spec: Pipeline) -> str:
    return json.dumps(spec.dump(), indent=2, ensure_ascii=False) + "\n"
