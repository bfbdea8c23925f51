"""`FlowcAdapter`: a DSPy adapter that sends the messages a flowc llm node sends and reads the reply
as flowc does, so an exported program (or a pipeline under DSPy's optimizers) behaves like the
pipeline under `flowc run`.

- The signature's instructions are the node's prompt template. Placeholders the instructions no
  longer hold (an optimizer rewrote them) are appended as `name: {{name}}` lines, so every input
  still reaches the model; `prompt_from_instructions` writes the same template back into the spec.
- The system prompt, reply format and port types come from the output fields' schema extras
  (`flowc_output` in the exported program).
- Demos are flowc demos (input and output values), formatted as user/assistant turns.
- A reply that cannot be read gets one repair request, as in flowc's executor.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import dspy

from flowc.errors import OutputParseError
from flowc.interop.templates import prompt_from_instructions
from flowc.runtime.outputs import MISSING, OutputSpec, parse_outputs
from flowc.runtime.prompting import build_messages, repair_message
from flowc.spec.types import DOC, DOC_RECORD, ListT, OptionalT, TypeExpr, parse_type


def _resolve(t: TypeExpr) -> TypeExpr:
    if t == DOC:
        return DOC_RECORD
    if isinstance(t, ListT):
        return ListT(_resolve(t.item))
    if isinstance(t, OptionalT):
        return OptionalT(_resolve(t.inner))
    return t


def node_meta(signature: type[dspy.Signature]) -> tuple[OutputSpec, str | None]:
    """The reply format, port types and system prompt the exported signature carries."""
    ports: dict[str, TypeExpr] = {}
    fmt, system = "text", None
    for name, field in signature.output_fields.items():
        extra = (field.json_schema_extra or {}).get("flowc")
        if not isinstance(extra, Mapping):
            raise ValueError(f"output '{name}' has no flowc metadata: FlowcAdapter runs signatures exported by flowc")
        ports[name] = _resolve(parse_type(str(extra["type"])))
        fmt, system = str(extra.get("format", "text")), extra.get("system")
    return OutputSpec(ports, fmt), system


def node_name(signature: type[dspy.Signature]) -> str | None:
    for f in signature.output_fields.values():
        meta = (f.json_schema_extra or {}).get("flowc")
        if isinstance(meta, Mapping):
            return str(meta.get("node"))
    return None


def is_flowc_signature(signature: type[dspy.Signature]) -> bool:
    return any("flowc" in (f.json_schema_extra or {}) for f in signature.output_fields.values())


class FlowcAdapter(dspy.Adapter):
    """Formats and parses exactly as flowc's executor does (runtime/prompting.py, runtime/outputs.py).

    Signatures that flowc did not export (an optimizer's own, e.g. MIPROv2's instruction proposer)
    go through DSPy's ChatAdapter."""

    def __init__(self, lms: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """`lms`: node name → the LM that node calls (its model), over the LM DSPy passes in."""
        super().__init__(**kwargs)
        self.fallback = dspy.ChatAdapter()
        self.lms = dict(lms or {})

    def format(
        self, signature: type[dspy.Signature], demos: list[dict[str, Any]], inputs: dict[str, Any]
    ) -> list[dict[str, Any]]:
        if not is_flowc_signature(signature):
            return list(self.fallback.format(signature, demos, inputs))
        spec, system = node_meta(signature)
        names = list(signature.input_fields)
        prompt = prompt_from_instructions(signature.instructions, names)
        flowc_demos = [{k: v for k, v in dict(d).items() if not k.startswith("augmented")} for d in demos]
        messages = build_messages(
            system=system,
            prompt=prompt,
            demos=flowc_demos,
            inputs={k: inputs.get(k) for k in names},
            outputs=spec,
        )
        return [{"role": m.role, "content": m.content} for m in messages]

    def parse(self, signature: type[dspy.Signature], completion: str) -> dict[str, Any]:
        if not is_flowc_signature(signature):
            return dict(self.fallback.parse(signature, completion))
        spec, _system = node_meta(signature)
        values = parse_outputs(completion, spec, node=signature.__name__)
        return {k: (None if v is MISSING else v) for k, v in values.items()}

    def __call__(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type[dspy.Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        if not is_flowc_signature(signature):
            return list(self.fallback(lm, lm_kwargs, signature, demos, inputs))
        lm = self.lms.get(node_name(signature) or "", lm)
        messages = self.format(signature, demos, inputs)
        reply = _complete(lm, messages, lm_kwargs)
        try:
            return [self.parse(signature, reply)]
        except OutputParseError as first:
            spec, _system = node_meta(signature)
            problem = first.diagnostic.message.split(": ", 1)[-1]
            retry = [
                *messages,
                {"role": "assistant", "content": reply},
                {"role": "user", "content": repair_message(problem, spec).content},
            ]
            return [self.parse(signature, _complete(lm, retry, lm_kwargs))]

    async def acall(
        self,
        lm: Any,
        lm_kwargs: dict[str, Any],
        signature: type[dspy.Signature],
        demos: list[dict[str, Any]],
        inputs: dict[str, Any],
    ) -> list[dict[str, Any]]:
        return self(lm, lm_kwargs, signature, demos, inputs)


def _complete(lm: Any, messages: list[dict[str, Any]], lm_kwargs: dict[str, Any]) -> str:
    """One chat call with OpenAI-style messages, as DSPy 3.4's own adapters make it (they mark the
    call so that the LM does not warn about the messages= form, which 3.5 replaces)."""
    try:
        from dspy.clients._deprecation import adapter_message_call
    except ImportError:  # another DSPy 3.x: a plain call
        marked: Any = contextlib.nullcontext()
    else:
        marked = adapter_message_call(lm, messages)
    with marked:
        return _text(lm(messages=messages, **lm_kwargs))


def _text(outputs: Any) -> str:
    first = outputs[0] if isinstance(outputs, list) else outputs
    if isinstance(first, dict):
        return str(first.get("text") or "")
    return str(first or "")
