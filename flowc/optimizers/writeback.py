"""Write an optimized pipeline back as source: a reviewable diff, not a regenerated file.

For `.flow` specs, changed prompts and system prompts are replaced in place (their spans are known),
so comments and layout survive; anything else (demos, YAML sources) is written by the canonical
printer of the source's format.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

from flowc.compile import CompiledPipeline
from flowc.optimizers.base import ParamPatch
from flowc.spec.io import dump_json, dump_yaml
from flowc.syntax.printer import _long_string, print_flow


def optimized_source(original: CompiledPipeline, patched: CompiledPipeline, patch: ParamPatch) -> str:
    path = original.spec.source_path
    if path and path.endswith(".flow") and Path(path).is_file():
        text = Path(path).read_text(encoding="utf-8")
        edited = _edit_in_place(text, original, patch)
        if edited is not None:
            return edited
        return print_flow(patched.spec)
    if path and path.endswith((".yaml", ".yml")):
        return dump_yaml(patched.spec)
    if path and path.endswith(".json"):
        return dump_json(patched.spec)
    return print_flow(patched.spec)


def _edit_in_place(text: str, original: CompiledPipeline, patch: ParamPatch) -> str | None:
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    edits: list[tuple[int, int, str]] = []
    for name, value in patch.params.items():
        param = original.params[name]
        if param.kind not in ("prompt", "system") or param.node is None or not isinstance(value, str):
            return None
        node = original.spec.nodes[param.node]
        base = ("nodes", param.node) if getattr(node, "kind", "") != "map" else ("nodes", param.node, "body")
        span = original.spec.spans.get((*base, param.kind))
        if span is None or span.end_line is None or span.end_column is None:
            return None
        start = offsets[span.line - 1] + span.column - 1
        end = offsets[span.end_line - 1] + span.end_column - 1
        old = text[start:end]
        if old.startswith('"""'):
            indent = lines[span.line - 1][: len(lines[span.line - 1]) - len(lines[span.line - 1].lstrip())]
            new = _long_string(value, indent) if "\n" in value else json.dumps(value, ensure_ascii=False)
            if new is None:
                return None
        else:  # the span covers the text inside the quotes
            new = json.dumps(value, ensure_ascii=False)[1:-1]
            if "\n" in value:
                indent = lines[span.line - 1][: len(lines[span.line - 1]) - len(lines[span.line - 1].lstrip())]
                block = _long_string(value, indent)
                if block is None:
                    return None
                start, end, new = start - 1, end + 1, block
        edits.append((start, end, new))
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


def unified_diff(old: str, new: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}")
    )
