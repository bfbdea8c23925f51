"""The messages an `llm` node sends: system prompt, demos as worked examples, the rendered prompt
and the reply-format sentence. Pure functions of the node's params and inputs, so a request (and its
cache key) depends only on them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    msgs: list[Message] = []
    if system:
        msgs.append(Message(role="system", content=system))
    instructions = format_instructions(outputs)
    for demo in demos:
        demo_inputs = {k: demo.get(k, "") for k in inputs}
        demo_outputs = {k: demo[k] for k in outputs.ports if k in demo}
        if not demo_outputs:
            continue  # a demo without outputs teaches nothing
        msgs.append(Message(role="user", content=_user(prompt, demo_inputs, instructions)))
        msgs.append(Message(role="assistant", content=render_reply(outputs, demo_outputs)))
    msgs.append(Message(role="user", content=_user(prompt, inputs, instructions)))
    return tuple(msgs)


def _user(prompt: str, values: Mapping[str, Any], instructions: str) -> str:
    text = render(prompt, dict(values)).strip()
    return f"{text}\n\n{instructions}" if instructions else text


def repair_message(error: str, outputs: OutputSpec) -> Message:
    """The follow-up asking the model to fix a reply that could not be read."""
    how = format_instructions(outputs) or "Reply with the answer only."
    return Message(role="user", content=f"Your reply could not be read ({error}). {how}")
