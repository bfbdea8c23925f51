"""Prompt flow (DAG flows) → flowc. `import_promptflow(path)` reads a flow.dag.yaml and its prompt and
tool files and returns the converted pipeline as `.flow` text, with every diagnostic of the
conversion located in the file it concerns."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from flowc.errors import Diagnostic, FlowcError
from flowc.source import SourceFile
from flowc.spec.models import Pipeline


@dataclass
class Imported:
    """The result of a conversion: the pipeline (None when an error stopped it), its `.flow` text,
    the diagnostics, the files they point into, and the tools to register before running it."""

    pipeline: Pipeline | None
    text: str
    diagnostics: list[Diagnostic]
    sources: dict[str, SourceFile] = field(default_factory=dict)
    tools: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.pipeline is not None and not any(d.severity == "error" for d in self.diagnostics)


def _default_name(path: Path) -> str:
    from flowc.interop.promptflow.reading import flowc_name

    folder = path.resolve().parent.name
    return flowc_name(re.sub(r"[^A-Za-z0-9_]", "_", folder).strip("_") or "imported").lower()


def import_promptflow(path: str | Path, *, name: str | None = None, models: dict[str, str] | None = None) -> Imported:
    """Convert the Prompt flow DAG flow at `path` (a flow.dag.yaml, or the folder holding one).

    Args:
        path: the flow.dag.yaml, or its folder.
        name: the pipeline's name (default: the folder's name).
        models: connection name → litellm model id, overriding the model a connection becomes.
    """
    from flowc.interop.promptflow.convert import Converter
    from flowc.interop.promptflow.reading import Dag
    from flowc.syntax.printer import print_flow

    p = Path(path)
    if p.is_dir():
        p = p / "flow.dag.yaml"
    if not p.is_file():
        raise FlowcError("file-not-found", f"no flow.dag.yaml at '{path}'", hint="pass a flow.dag.yaml or its folder")
    dag = Dag.read(SourceFile.read(p))
    conv = Converter(dag, name=name or _default_name(p), model_ids=dict(models or {}))
    data = conv.convert() if not dag.failed else None
    pipeline = None
    text = ""
    if data is not None:
        pipeline = Pipeline.model_validate(data)
        header = [f"# Imported from {p.name} by `flowc import promptflow` (see docs/interop.md)."]
        if conv.tools:
            header.append("# Register these tools before running it (ToolRegistry or a flowc.plugins entry point):")
            header += [f"#   {fn}  (from {file})" for fn, file in conv.tools]
        text = "\n".join(header) + "\n" + print_flow(pipeline)
    return Imported(pipeline, text, dag.diagnostics, dag.sources, conv.tools)
