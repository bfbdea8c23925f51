"""Reading a flow.dag.yaml: the data with the place of every value, names made flowc names, and
`${...}` references parsed.

Prompt flow's references (promptflow-core `InputAssignment.deserialize`): `${inputs.x}` or
`${flow.x}` is a flow input; `${node}` and `${node.output}` a node's output; `${node.output.key}` a
key of the dict a node returned. Anything else written as a string is a literal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from flowc.errors import Diagnostic, Severity
from flowc.source import SourceFile, Span
from flowc.spec.io import load_yaml_data
from flowc.spec.models import RESERVED

_REF = re.compile(r"^\$\{(.*)\}$", re.S)
_INVALID = re.compile(r"[^A-Za-z0-9_]")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Reference:
    """A parsed `${...}`: a flow input (`node` None) or a node's output (optionally one key of it)."""

    node: str | None
    name: str  # the input's name, or "output"
    key: str | None = None
    deeper: bool = False  # `${node.output.a.b}`: more than one key


def parse_reference(value: Any) -> Reference | None:
    """The reference a value writes, or None for a literal."""
    if not isinstance(value, str):
        return None
    m = _REF.match(value.strip())
    if not m:
        return None
    body = m.group(1).strip()
    for prefix in ("inputs.", "flow."):
        if body.startswith(prefix):
            return Reference(None, body[len(prefix) :])
    node, _, rest = body.partition(".")
    if not rest:
        return Reference(node, "output")
    section, _, prop = rest.partition(".")
    if not prop:
        return Reference(node, section)
    key, _, more = prop.partition(".")
    return Reference(node, section, key, deeper=bool(more))


def flowc_name(name: str) -> str:
    """A flowc name for a Prompt flow name: invalid characters become '_', reserved words get '_'."""
    out = _INVALID.sub("_", name) or "_"
    if out[0].isdigit():
        out = "_" + out
    return out + "_" if out in RESERVED else out


@dataclass
class Dag:
    """The dag.yaml's data, spans and source, and the diagnostics of the conversion so far."""

    source: SourceFile
    data: dict[str, Any]
    spans: dict[tuple[str | int, ...], Span]
    diagnostics: list[Diagnostic] = field(default_factory=list)
    sources: dict[str, SourceFile] = field(default_factory=dict)

    @classmethod
    def read(cls, source: SourceFile) -> Dag:
        data, spans, diags = load_yaml_data(source)
        dag = cls(source, data if isinstance(data, dict) else {}, spans, list(diags))
        dag.sources[source.path] = source
        if data is not None and not isinstance(data, dict):
            dag.report("yaml-not-mapping", "a flow.dag.yaml is a mapping", (), hint="start with 'inputs:' and 'nodes:'")
        return dag

    def span(self, *path: str | int, key: bool = False) -> Span:
        """The place of the value at `path` (or of its key), or of its closest recorded ancestor."""
        if key and (*path, "@key") in self.spans:
            return self.spans[(*path, "@key")]
        p: Path_ = tuple(path)
        while p and p not in self.spans:
            p = p[:-1]
        return self.spans.get(p) or Span(self.source.path, 1, 1)

    def report(
        self,
        code: Any,
        message: str,
        path: Path_,
        *,
        hint: str | None = None,
        severity: Severity = "error",
        key: bool = False,
    ) -> None:
        self.diagnostics.append(Diagnostic(code, message, self.span(*path, key=key), hint, severity))

    @property
    def failed(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)
