"""`flowc export --to dspy`: write the DSPy program of a pipeline and its state, and read a DSPy
program's state (instructions, demos) back as flowc params.

DIR/program.py   the program (codegen.py): signatures, the module, its forward
DIR/program.json the state in DSPy's own save format (`module.save`), loadable with `module.load`
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.interop.dspy.codegen import Exported, program_source
from flowc.interop.templates import prompt_from_instructions
from flowc.spec.models import LLMNode, MapNode
from flowc.spec.template import TemplateError


@dataclass(frozen=True)
class Program:
    """An exported program, loaded: its module, an instance with the spec's state, and the mapping."""

    module: ModuleType
    instance: Any
    exported: Exported


def _llm(compiled: CompiledPipeline, node: str) -> LLMNode:
    spec = compiled.spec.nodes[node]
    body = spec.body if isinstance(spec, MapNode) else spec
    assert isinstance(body, LLMNode)
    return body


def load_program(compiled: CompiledPipeline, *, source_dir: Path | None = None, **kwargs: Any) -> Program:
    """Build the DSPy program of `compiled` in this process (from the same source `export` writes),
    with the spec's demos set on its predictors. `kwargs` go to the program (retrievers, tools)."""
    exported = program_source(compiled)
    name = f"flowc_dspy_{compiled.name}_{compiled.hash[:12]}"
    if source_dir is not None:
        path = source_dir / "program.py"
    else:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="flowc-dspy-")) / "program.py"
        path.write_text(exported.source, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the signatures' annotations through the module
    spec.loader.exec_module(module)
    instance = getattr(module, exported.class_name)(**kwargs)
    for attr, node in exported.predictors.items():
        getattr(instance, attr).demos = [dict(d) for d in _llm(compiled, node).demos]
    return Program(module, instance, exported)


def export_dspy(compiled: CompiledPipeline, out_dir: str | Path) -> tuple[Path, Path, tuple[str, ...]]:
    """Write DIR/program.py and DIR/program.json; returns their paths and the export's warnings."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    exported = program_source(compiled)
    (out / "program.py").write_text(exported.source, encoding="utf-8")
    program = load_program(compiled, source_dir=out)
    state = out / "program.json"
    program.instance.save(str(state))
    return out / "program.py", state, exported.warnings


def params_from_program(compiled: CompiledPipeline, program: Program, instance: Any | None = None) -> dict[str, Any]:
    """The flowc params (prompts, demos) a DSPy program's state stands for, where they differ from
    the spec's: an optimized program's result, as a patch's values."""
    inst = instance if instance is not None else program.instance
    params: dict[str, Any] = {}
    for attr, node in program.exported.predictors.items():
        predictor = getattr(inst, attr)
        llm = _llm(compiled, node)
        inputs = list(llm.inputs)
        try:
            prompt = prompt_from_instructions(predictor.signature.instructions, inputs)
        except TemplateError as e:
            raise FlowcError(
                "export-unsupported",
                f"node '{node}': the DSPy instructions cannot be a flowc prompt: {e}",
                hint="placeholders in instructions must name the node's inputs",
            ) from None
        if prompt != llm.prompt and f"{node}.prompt" in compiled.params:
            params[f"{node}.prompt"] = prompt
        keep = set(inputs) | (set(llm.outputs) or {"text"})
        demos = [{k: v for k, v in dict(d).items() if k in keep} for d in predictor.demos]
        demos = [d for d in demos if d]
        if demos != [dict(d) for d in llm.demos] and f"{node}.demos" in compiled.params:
            params[f"{node}.demos"] = demos
    return params
