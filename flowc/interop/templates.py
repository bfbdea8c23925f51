"""Free instruction text ↔ flowc prompt templates, shared by the DSPy adapter and GEPA.

Optimizers that rewrite instructions (DSPy's, GEPA's proposer) may drop a node's placeholders. The
rule both sides apply: every input the text no longer mentions is appended as a `name: {{name}}`
line, so it still reaches the model; a placeholder naming no input is an error.
"""

from __future__ import annotations

from flowc.spec.template import TemplateError, placeholders


def prompt_from_instructions(instructions: str, inputs: list[str]) -> str:
    """The flowc prompt template that sends what `instructions` + the inputs send.

    Raises TemplateError when the text holds a malformed placeholder or one naming no input."""
    used = {p.name for p in placeholders(instructions)}
    unknown = sorted(used - set(inputs))
    if unknown:
        raise TemplateError(f"the instructions use {{{{{unknown[0]}}}}}, which is not an input", 0)
    missing = [i for i in inputs if i not in used]
    if not missing:
        return instructions
    return instructions.rstrip() + "\n\n" + "\n".join(f"{i}: {{{{{i}}}}}" for i in missing)
