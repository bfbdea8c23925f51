"""The messages an `llm` node sends: system prompt, demos as worked examples, the rendered prompt
and the reply-format sentence. Pure functions of the node's params and inputs, so a request (and its
cache key) depends only on them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from flowc.runtime.lm import Message
from flowc.runtime.outputs import OutputSpec, format_instructions, render_reply
from flowc.spec.template import render


def build_messages(
    *,
    system: str | None,
    prompt: str,
    demos: list[dict[str, Any]],
    inputs: Mapping[str, Any],
    outputs: OutputSpec,
) -> tuple[Message, ...]:
    head = demo_messages(system=system, prompt=prompt, demos=demos, inputs=inputs, outputs=outputs)
    return (*head, user_message(prompt, inputs, format_instructions(outputs)))


def demo_messages(
    *,
    system: str | None,
    prompt: str,
    demos: list[dict[str, Any]],
    inputs: Mapping[str, Any],
    outputs: OutputSpec,
) -> tuple[Message, ...]:
    """The system prompt and the demos as worked examples: what every call of a node starts with
    (the demos' inputs are laid out by the names of `inputs`, not their values)."""
    msgs: list[Message] = []
    if system:
        msgs.append(_message("system", system))
    instructions = format_instructions(outputs)
    for demo in demos:
        demo_inputs = {k: demo.get(k, "") for k in inputs}
        demo_outputs = {k: demo[k] for k in outputs.ports if k in demo}
        if not demo_outputs:
            continue  # a demo without outputs teaches nothing
        msgs.append(_message("user", _user(prompt, demo_inputs, instructions)))
        msgs.append(_message("assistant", render_reply(outputs, demo_outputs)))
    return tuple(msgs)


def user_message(prompt: str, inputs: Mapping[str, Any], instructions: str) -> Message:
    """The rendered prompt with the reply-format sentence: the part of a call that varies."""
    return _message("user", _user(prompt, inputs, instructions))


def _message(role: Literal["system", "user", "assistant"], content: str) -> Message:
    # Built from trusted parts on the hot path: skip validation (a role is one of three literals here).
    return Message.model_construct(role=role, content=content)


def _user(prompt: str, values: Mapping[str, Any], instructions: str) -> str:
    text = render(prompt, dict(values)).strip()
    return f"{text}\n\n{instructions}" if instructions else text


def repair_message(error: str, outputs: OutputSpec) -> Message:
    """The follow-up asking the model to fix a reply that could not be read."""
    how = format_instructions(outputs) or "Reply with the answer only."
    return Message(role="user", content=f"Your reply could not be read ({error}). {how}")
