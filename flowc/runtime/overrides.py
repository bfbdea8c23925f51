"""Switching a spec's models without editing it: `--model NAME=ID` and the environment.

    flowc eval rag.flow --data q.jsonl --model small=openai/gpt-4o-mini
    flowc run rag.flow --model "small=openai/qwen,api_base=http://gpu-box:8000/v1" -i question=...
    FLOWC_MODEL_SMALL=openai/gpt-4o-mini flowc test rag.flow
    FLOWC_MODELS="small=openai/gpt-4o-mini; judge=anthropic/claude-3-5-haiku-latest" flowc eval ...

An override replaces the declaration's model id and drops its `api_base` (a different model is
usually served elsewhere) unless it sets one (`,api_base=URL`); the other settings stay. The
command line wins over `FLOWC_MODEL_<NAME>` (the name in any case), which wins over
`FLOWC_MODELS`. Overrides change the compiled artifact (and so its hash, its cache entries and
its checkpoints), and every run records them in the run store (`flowc trace` shows them).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError

_SETTINGS = ("api_base",)
_HINT = "write --model NAME=PROVIDER/MODEL, e.g. --model small=openai/gpt-4o-mini (optionally ,api_base=URL)"


def parse_override(text: str, where: str = "--model") -> tuple[str, dict[str, Any]]:
    """`NAME=ID[,api_base=URL]` -> (NAME, {"id": ID, "api_base": URL or None})."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    parts = [p.strip() for p in rest.split(",")]
    model_id = parts[0] if parts else ""
    if not sep or not name or not model_id:
        raise FlowcError("invalid-value", f"{where} '{text}' is not NAME=MODEL", hint=_HINT)
    update: dict[str, Any] = {"id": model_id, "api_base": None}
    for part in parts[1:]:
        key, ksep, value = part.partition("=")
        if not ksep or key.strip() not in _SETTINGS or not value.strip():
            raise FlowcError(
                "invalid-value",
                f"{where} '{text}': '{part}' is not a setting an override may change",
                hint=f"settings: {', '.join(_SETTINGS)}; {_HINT}",
            )
        update[key.strip()] = value.strip()
    return name, update


def collect_overrides(
    cli: Iterable[str], declared: Iterable[str], env: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """The overrides in force: FLOWC_MODELS, then FLOWC_MODEL_<NAME>, then the command line."""
    env = os.environ if env is None else env
    names = list(declared)
    out: dict[str, dict[str, Any]] = {}
    for entry in (e for e in env.get("FLOWC_MODELS", "").replace("\n", ";").split(";") if e.strip()):
        name, update = parse_override(entry.strip(), "FLOWC_MODELS entry")
        out[_declared(name, names, "FLOWC_MODELS")] = update
    for key, value in env.items():
        if key.upper().startswith("FLOWC_MODEL_") and value.strip():
            name = key[len("FLOWC_MODEL_") :]
            _, update = parse_override(f"{name}={value}", key)
            out[_declared(name, names, key, ignore_case=True)] = update
    for text in cli:
        name, update = parse_override(text)
        out[_declared(name, names, "--model")] = update
    return out


def _declared(name: str, names: list[str], where: str, *, ignore_case: bool = False) -> str:
    if name in names:
        return name
    if ignore_case:
        matches = [n for n in names if n.lower() == name.lower()]
        if len(matches) == 1:
            return matches[0]
    raise FlowcError(
        "unknown-model",
        f"{where} overrides model '{name}', which the pipeline does not declare",
        hint=f"declared models: {', '.join(names) or 'none'}",
    )


def apply_overrides(compiled: CompiledPipeline, overrides: Mapping[str, Mapping[str, Any]]) -> CompiledPipeline:
    """The pipeline with the overridden model declarations (the same object when there are none)."""
    return compiled.with_models(overrides) if overrides else compiled


def run_meta(compiled: CompiledPipeline, overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What the run store records about how runs were started: every model in use, and overrides."""
    meta: dict[str, Any] = {"models": {n: m.id for n, m in compiled.spec.models.items()}}
    if overrides:
        meta["overrides"] = {n: {k: v for k, v in u.items() if v is not None} for n, u in overrides.items()}
    return meta
