"""Write an optimized pipeline back as source: a reviewable diff, not a regenerated file.

For `.flow` specs, changed prompts and system prompts are replaced in place (their spans are known),
so comments and layout survive; so are changed weights (`adapter:` of a model, in `.flow` and YAML
sources). Anything else (demos, prompts in YAML sources) is written by the canonical printer of the
source's format. Trained adapters are first copied beside the written spec (`copy_adapters`), so
that the spec names files that live with it, not in an optimizer's run directory.
"""

from __future__ import annotations

import difflib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from flowc.compile import CompiledPipeline, parse_spec_text
from flowc.errors import FlowcError, SpecErrors
from flowc.optimizers.base import ParamPatch
from flowc.spec.adapters import file_sha256, served_path, short
from flowc.spec.io import dump_json, dump_yaml
from flowc.spec.models import Pipeline
from flowc.syntax.printer import _long_string, print_flow

Edit = tuple[int, int, str]  # (start offset, end offset, new text)


def optimized_source(original: CompiledPipeline, patched: CompiledPipeline, patch: ParamPatch) -> str:
    """The source of the optimized spec, in the original's format. Weights values are written as
    the patch gives their paths: pass the patch `copy_adapters` returned."""
    path = original.spec.source_path
    spec = _source_spec(original, patched, patch)
    if path and path.endswith((".flow", ".yaml", ".yml")) and Path(path).is_file():
        text = Path(path).read_text(encoding="utf-8")
        edit = _edit_in_place if path.endswith(".flow") else _edit_yaml_in_place
        edited = edit(text, original, patch)
        if edited is not None and (not _weights(original, patch) or _reads_as(edited, path, spec)):
            return edited
    if path and path.endswith((".yaml", ".yml")):
        return dump_yaml(spec)
    if path and path.endswith(".json"):
        return dump_json(spec)
    return print_flow(spec)


def _weights(original: CompiledPipeline, patch: ParamPatch) -> dict[str, Any]:
    """model name -> new weights value, for the weights params the patch changes."""
    return {n.rsplit(".", 1)[0]: v for n, v in patch.params.items() if original.params[n].kind == "weights"}


def _source_spec(original: CompiledPipeline, patched: CompiledPipeline, patch: ParamPatch) -> Pipeline:
    """The patched spec with each adapter written as the patch's value gives its path."""
    weights = _weights(original, patch)
    if not weights:
        return patched.spec
    models = {
        k: m.model_copy(update={"adapter": weights[k]["path"] if weights[k] else None}) if k in weights else m
        for k, m in patched.spec.models.items()
    }
    return patched.spec.model_copy(update={"models": models})


def _reads_as(text: str, path: str, spec: Pipeline) -> bool:
    """Whether edited source text reads back as `spec` (else the canonical printer writes it)."""
    try:
        return parse_spec_text(text, path).dump() == spec.dump()
    except SpecErrors:
        return False


def _line_offsets(text: str) -> tuple[list[str], list[int]]:
    lines = text.split("\n")
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line) + 1)
    return lines, offsets


def _edit_in_place(text: str, original: CompiledPipeline, patch: ParamPatch) -> str | None:
    lines, offsets = _line_offsets(text)
    edits: list[Edit] = []
    for name, value in patch.params.items():
        param = original.params[name]
        if param.kind == "weights":
            edit = _flow_adapter_edit(text, lines, offsets, original.spec, name.rsplit(".", 1)[0], value)
            if edit is None:
                return None
            edits.append(edit)
            continue
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
    return _apply(text, edits)


def _apply(text: str, edits: list[Edit]) -> str:
    for start, end, new in sorted(edits, reverse=True):
        text = text[:start] + new + text[end:]
    return text


# -- weights: `adapter:` of a model ---------------------------------------------------------------


def _offset(offsets: list[int], line: int, column: int) -> int:
    return offsets[line - 1] + column - 1


def _replace_quoted(text: str, offsets: list[int], spans: dict[Any, Any], key: tuple[Any, ...], lit: str) -> Edit:
    """Replace the string at `key` (its span excludes the quotes, when it has some) by `lit`."""
    s = spans[key]
    start, end = _offset(offsets, s.line, s.column), _offset(offsets, s.end_line, s.end_column)
    if start > 0 and end < len(text) and text[start - 1] in "\"'" and text[end] == text[start - 1]:
        start, end = start - 1, end + 1
    return start, end, lit


def _flow_adapter_edit(
    text: str, lines: list[str], offsets: list[int], spec: Pipeline, model: str, value: Any
) -> Edit | None:
    """Set `adapter: "..."` in a `.flow` model declaration: replace it, or add it to the block (a
    model with a weights param has one: it says `trainable` or `adapter`)."""
    if value is None:
        return None  # removing a setting: left to the printer
    spans = spec.spans
    lit = json.dumps(value["path"], ensure_ascii=False)
    if ("models", model, "adapter") in spans:
        return _replace_quoted(text, offsets, spans, ("models", model, "adapter"), lit)
    settings = [k for k in spans if len(k) == 3 and k[:2] == ("models", model) and k[2] not in ("id", "@key")]
    if not settings:
        return None
    last = max(settings, key=lambda k: (spans[k].end_line or spans[k].line, spans[k].end_column or 0))
    key_span = spans.get((*last, "@key"), spans[last])
    line_no = spans[last].end_line or spans[last].line
    at = offsets[line_no - 1] + len(lines[line_no - 1])
    return at, at, "\n" + " " * (key_span.column - 1) + f"adapter: {lit}"


def _edit_yaml_in_place(text: str, original: CompiledPipeline, patch: ParamPatch) -> str | None:
    """Weights changes edited into YAML text (comments kept); None when the patch changes more."""
    lines, offsets = _line_offsets(text)
    spans = original.spec.spans
    edits: list[Edit] = []
    for name, value in patch.params.items():
        if original.params[name].kind != "weights" or value is None:
            return None
        model = name.rsplit(".", 1)[0]
        lit = json.dumps(value["path"], ensure_ascii=False)  # a JSON string is a YAML string
        if ("models", model, "adapter") in spans:
            edits.append(_replace_quoted(text, offsets, spans, ("models", model, "adapter"), lit))
            continue
        key, ident = spans.get(("models", model, "id", "@key")), spans.get(("models", model, "id"))
        if key is None or ident is None:
            return None
        line_no = ident.end_line or ident.line
        at = offsets[line_no - 1] + len(lines[line_no - 1])
        edits.append((at, at, "\n" + " " * (key.column - 1) + f"adapter: {lit}"))
    return _apply(text, edits)


def copy_adapters(patch: ParamPatch, original: CompiledPipeline, dest_dir: str | Path) -> ParamPatch:
    """The patch as a spec in `dest_dir` should name its weights: every adapter it names, with its
    served GGUF, copied to `dest_dir/adapters/<model>-<sha12>.{safetensors,gguf}`, and the
    value's path made relative to `dest_dir`. Other params are left as they are.

    Raises:
        FlowcError: adapter-checksum-mismatch when a file no longer has the sha256 the patch names.
    """
    dest_dir = Path(dest_dir)
    params = dict(patch.params)
    for name, value in patch.params.items():
        if original.params[name].kind != "weights" or value is None:
            continue
        model = name.rsplit(".", 1)[0]
        src = Path(value["path"])
        src = src if src.is_absolute() else original.spec.base_dir / src
        sha = value["sha256"]
        got = file_sha256(src) if src.is_file() else "missing"
        if got != sha:
            raise FlowcError(
                "adapter-checksum-mismatch",
                f"'{name}': {src} has sha256 {short(got)}…, the patch names {short(sha)}…",
                hint="the run directory's adapter changed after the job: rerun the optimizer",
            )
        dest = dest_dir / "adapters" / f"{model}-{short(sha)}.safetensors"
        dest.parent.mkdir(parents=True, exist_ok=True)
        for a, b in ((src, dest), (served_path(src), served_path(dest))):
            if not (b.is_file() and a.resolve() == b.resolve()):
                tmp = b.with_name(b.name + ".tmp")
                shutil.copyfile(a, tmp)
                os.replace(tmp, b)
        params[name] = {"path": Path(os.path.relpath(dest, dest_dir)).as_posix(), "sha256": sha}
    return patch.model_copy(update={"params": params})


def unified_diff(old: str, new: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}")
    )
