"""The narrow protocol every model client speaks: one async `complete(LMRequest) -> LMResponse`.

Everything above this module (executor, optimizers, test doubles) sees only these types; the
transports (`transports/`: native HTTP, the embedded models, litellm) are the only places that
talk to providers, and `client.ModelClient` routes between them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class LMRequest(BaseModel):
    """A provider-independent chat completion request.

    `canonical()` is the JSON that identifies a request for caching and replay: it leaves out
    settings that do not change the answer (timeouts, retries, the node that asked).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    messages: tuple[Message, ...]
    temperature: float = 0.0
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    api_base: str | None = None
    timeout_s: float | None = None
    extra: dict[str, Any] = Field(default_factory=dict)
    # A decoding constraint for the reply (constraints.py): {"grammar": GBNF} or {"json_schema": ...}.
    constraint: dict[str, Any] | None = None
    # Who asked: recorded in traces, never part of the canonical key.
    node: str | None = None

    def canonical(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": [m.model_dump() for m in self.messages],
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop),
            "extra": self.extra,
        } | ({"constraint": self.constraint} if self.constraint is not None else {})

    def key(self) -> str:
        """sha256 of the canonical request, the cache and replay key."""
        blob = json.dumps(self.canonical(), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    @property
    def prompt_text(self) -> str:
        return "\n".join(m.content for m in self.messages)


class LMResponse(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    finish_reason: str | None = None
    cached: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@runtime_checkable
class LMClient(Protocol):
    """Anything that answers chat requests: litellm, the embedded model, a scripted fake."""

    async def complete(self, request: LMRequest) -> LMResponse: ...


def chat(system: str | None, user: str) -> tuple[Message, ...]:
    """The two-message chat most nodes send."""
    msgs = [Message(role="system", content=system)] if system else []
    msgs.append(Message(role="user", content=user))
    return tuple(msgs)
