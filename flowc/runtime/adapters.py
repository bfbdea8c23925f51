"""Serving a model with its LoRA adapter, and refusing an adapter that does not fit.

A compiled pipeline knows each model's adapter (`CompiledPipeline.adapters`, hashed at compile
time); a node's requests carry it as `LMRequest.adapter`, and the embedded provider loads the
base file with the adapter's llama.cpp GGUF (`CommonParams.lora_adapters`), one loaded instance
per (base file, adapter hash).

Three refusals, each before anything runs:
- `preflight(compiled)`: every adapter was trained on its model's base file (the sha256 recorded
  in the adapter against the file `local/...` resolves to), as located diagnostics on the
  `adapter:` line — `flowc check`, `flowc run` and `flowc optimize` call it;
- `check_files(base, adapter)`: just before loading, the base and the served GGUF still hash to
  what was compiled (a file replaced after compiling is refused, not served).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import Diagnostic, FlowcError, SpecErrors
from flowc.runtime.lm import LoraAdapter
from flowc.source import SourceFile
from flowc.spec.adapters import file_sha256, short


def lora_for(compiled: CompiledPipeline, model: str | None) -> LoraAdapter | None:
    """The adapter that requests to declared model `model` carry (None without one)."""
    ref = compiled.adapters.get(model) if model is not None else None
    if ref is None:
        return None
    return LoraAdapter(
        served=str(ref.served), sha256=ref.sha256, served_sha256=ref.served_sha256, base_sha256=ref.base_sha256
    )


def base_file(model_id: str) -> Path | None:
    """The GGUF file behind a `local/...` model id, or None where it is not installed (running it
    reports that, with the install command)."""
    from flowc.runtime.local_provider import resolve_model_path

    try:
        return resolve_model_path(model_id)
    except FlowcError:
        return None


def base_diagnostics(compiled: CompiledPipeline) -> list[Diagnostic]:
    """An `adapter-base-mismatch` diagnostic, located on its `adapter:` line, for every adapter
    (of the pipeline and its subflows) trained on another base file than its model's."""
    out: list[Diagnostic] = []
    for c in _with_subflows(compiled):
        for name, ref in c.adapters.items():
            model_id = c.spec.models[name].id
            base = base_file(model_id)
            if base is None:
                continue
            actual = file_sha256(base)
            if actual == ref.base_sha256:
                continue
            out.append(
                Diagnostic(
                    "adapter-base-mismatch",
                    f"adapter '{ref.written}' of model '{name}' was trained on another base model than "
                    f"{model_id} ({base.name})",
                    c.spec.span("models", name, "adapter"),
                    f"the adapter's base has sha256 {short(ref.base_sha256)}…, {model_id} has "
                    f"{short(actual)}…: point the model at the file the adapter was trained on, "
                    "or train the adapter on this model",
                )
            )
    return out


def _with_subflows(compiled: CompiledPipeline) -> list[CompiledPipeline]:
    """The pipeline and every flow it imports, at any depth."""
    out = [compiled]
    for sub in compiled.subflows.values():
        out.extend(_with_subflows(sub))
    return out


def preflight(compiled: CompiledPipeline) -> None:
    """Raise SpecErrors (with source excerpts) when an adapter does not fit its model's base."""
    diags = base_diagnostics(compiled)
    if not diags:
        return
    sources: dict[str, SourceFile] = {}
    for d in diags:
        if d.span is not None and d.span.path not in sources and Path(d.span.path).is_file():
            sources[d.span.path] = SourceFile.read(d.span.path)
    raise SpecErrors(diags, sources)


def check_files(model: str, base: Path, adapter: LoraAdapter) -> None:
    """Refuse to load `adapter` over `base` unless both files hash to what was compiled."""
    served = Path(adapter.served)
    if not served.is_file():
        raise FlowcError(
            "adapter-not-found",
            f"'{model}': the adapter's served GGUF {served} is gone",
            hint="restore it, or recompile the spec",
        )
    actual = file_sha256(base)
    if actual != adapter.base_sha256:
        raise FlowcError(
            "adapter-base-mismatch",
            f"'{model}': the adapter {served.name} was trained on another base than {base.name}",
            hint=f"the adapter's base has sha256 {short(adapter.base_sha256)}…, this file has {short(actual)}…",
        )
    got = file_sha256(served)
    if got != adapter.served_sha256:
        raise FlowcError(
            "adapter-checksum-mismatch",
            f"'{model}': {served} has sha256 {short(got)}…, the compiled pipeline pins {short(adapter.served_sha256)}…",
            hint="the file changed after compiling: restore it, or recompile the spec",
        )


def apply(params: Any, adapter: LoraAdapter) -> None:
    """Add the adapter to llama.cpp's load parameters (an xllamacpp.CommonParams), at full scale."""
    import xllamacpp

    params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(adapter.served, 1.0)]
