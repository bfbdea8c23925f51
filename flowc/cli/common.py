"""What the commands that run pipelines share: loading a spec with its model overrides, reading
inputs, building the executor (client, context-window guard, cache, run store), and the exact
command that resumes an interrupted one."""

from __future__ import annotations

import argparse
import json
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flowc
from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.runtime.config import RunConfig
from flowc.runtime.trace import StepRecord


def add_model_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME=MODEL",
        help="use another model for a declared one, e.g. small=openai/gpt-4o-mini (repeatable; "
        "also FLOWC_MODEL_<NAME> / FLOWC_MODELS)",
    )


def add_input_limit_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--max-input-bytes",
        type=int,
        metavar="N",
        help="refuse an input value or dataset line over N bytes "
        "(default 1,000,000 or $FLOWC_MAX_INPUT_BYTES; 0: none)",
    )


def load(spec: str, model_flags: list[str] | None = None) -> tuple[CompiledPipeline, dict[str, Any]]:
    """The compiled pipeline with its overrides applied, and the run meta to record."""
    from flowc.runtime.overrides import apply_overrides, collect_overrides, run_meta

    compiled = CompiledPipeline.from_artifact(spec) if spec.endswith(".artifact.json") else flowc.compile(spec)
    overrides = collect_overrides(model_flags or [], compiled.spec.models)
    compiled = apply_overrides(compiled, overrides)
    return compiled, run_meta(compiled, overrides)


def parse_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """`--input-file` (a JSON object) overlaid by `--input KEY=VALUE`s; checked for size and
    for text that is not UTF-8."""
    from flowc.runtime.datasets import check_inputs, max_input_bytes, read_utf8

    limit = max_input_bytes(getattr(args, "max_input_bytes", None))
    inputs: dict[str, Any] = {}
    if args.input_file:
        path = Path(args.input_file)
        try:
            loaded = json.loads(read_utf8(path, "the input file"))
        except (OSError, json.JSONDecodeError) as e:
            raise FlowcError(
                "dataset-invalid",
                f"cannot read inputs from '{args.input_file}': {e}",
                hint="write a JSON object of input names to values",
            ) from None
        if not isinstance(loaded, dict):
            raise FlowcError(
                "dataset-invalid",
                f"'{args.input_file}' holds a JSON {type(loaded).__name__}, not an object of inputs",
                hint='write a JSON object of input names to values, e.g. {"question": "..."}',
            )
        check_inputs(loaded, limit=limit, source=f"input in '{args.input_file}'")
        inputs.update(loaded)
    argv_inputs: dict[str, Any] = {}
    for item in args.input:
        key, sep, value = item.partition("=")
        if not sep:
            raise FlowcError(
                "missing-pipeline-input",
                f"--input '{item}' is not KEY=VALUE",
                hint='write --input question="What is ...?"',
            )
        argv_inputs[key.strip()] = value
    check_inputs(argv_inputs, limit=limit, source="--input")
    inputs.update(argv_inputs)
    return inputs


def executor(
    compiled: CompiledPipeline,
    *,
    no_cache: bool,
    meta: dict[str, Any] | None = None,
    on_step: Callable[[str, StepRecord], None] | None = None,
) -> Any:
    """The executor a command runs: the spec's client (behind a context-window guard), the response
    cache and the run store (recording `meta` with every run); `on_step` sees each step as it
    completes."""
    from flowc.runtime import session

    ex = session.open_executor(compiled, cache=not no_cache, config=RunConfig())
    if ex.store is not None:
        ex.store.meta = dict(meta or {})
        if on_step is not None:
            ex.store = StepTee(ex.store, on_step)
    return ex


class StepTee:
    """A run store that also shows each step as the executor stores it (live progress)."""

    def __init__(self, store: Any, on_step: Callable[[str, StepRecord], None]) -> None:
        self.inner = store
        self.on_step = on_step

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def add_step(self, run_id: str, step: StepRecord) -> None:
        self.inner.add_step(run_id, step)
        self.on_step(run_id, step)


def resume_command(argv: list[str], *, add: dict[str, str | None]) -> str:
    """The command line that continues an interrupted command: `argv` with each flag of `add`
    set (a flag with a value replaces the one given, if any)."""
    out = list(argv)
    for flag, value in add.items():
        if value is None:
            if flag not in out:
                out.append(flag)
            continue
        for i, a in enumerate(out):
            if a == flag and i + 1 < len(out):
                out[i + 1] = value
                break
            if a.startswith(flag + "="):
                out[i] = f"{flag}={value}"
                break
        else:
            out += [flag, value]
    return "flowc " + shlex.join(out)
