"""check-files: the files a spec names exist and lie inside its project (or an allowed folder).

Not an optional pass: `compile` runs it on every spec whatever pass list is chosen, because it
is what keeps an untrusted spec from making flowc read files outside its project (see
flowc/spec/paths.py and docs/security.md). Imports are checked where they are loaded (compile.py).
"""

from __future__ import annotations

from pathlib import Path

from flowc.errors import Diagnostic
from flowc.spec.models import Pipeline
from flowc.spec.paths import spec_path


def check_files(spec: Pipeline) -> list[Diagnostic]:
    """Corpora must exist (when the spec is a file, so its folder is known) and every corpus and
    adapter path must resolve inside the project or an allowed folder."""
    out: list[Diagnostic] = []
    from_file = spec.source_path is not None and Path(spec.source_path).is_file()
    for name, corpus in spec.corpora.items():
        sp = spec_path(corpus.path, spec.base_dir)
        span = spec.span("corpora", name, "path")
        if not sp.allowed:
            out.append(
                Diagnostic("path-outside-project", sp.outside_message(f"corpus '{name}'"), span, sp.outside_hint())
            )
        elif from_file and not sp.resolved.is_file():
            there = "a folder" if sp.resolved.is_dir() else "no file"
            out.append(
                Diagnostic(
                    "corpus-not-found",
                    f"corpus '{name}': there is {there} at {sp.resolved}",
                    span,
                    "corpus paths are relative to the spec's folder; a corpus is a .jsonl file of "
                    '{"id", "title", "text"} records',
                )
            )
    for name, model in spec.models.items():
        if model.adapter:
            sp = spec_path(model.adapter, spec.base_dir)
            if not sp.allowed:
                out.append(
                    Diagnostic(
                        "path-outside-project",
                        sp.outside_message(f"the adapter of model '{name}'"),
                        spec.span("models", name, "adapter"),
                        sp.outside_hint(),
                    )
                )
    return out
