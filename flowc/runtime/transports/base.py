"""What the transports share: the contract, reading an OpenAI-style reply, and Retry-After.

A transport makes one attempt at one request for the models it serves and raises a typed
`LMError` when it fails; `client.ModelClient` routes each model to its transport and owns
retries, backoff, rate limits and fallbacks, so those behave the same whichever way a call goes.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

from flowc.errors import LMError
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.policy import ModelPolicy

BAD_RESPONSE_HINT = "the provider answered without text; check the model id and max_tokens, or add a fallback model"


class Transport(Protocol):
    """One way of reaching models: `prepare` once per model, then `complete` (an `LMClient`)."""

    name: ClassVar[str]

    def prepare(self, model: str, policy: ModelPolicy) -> None:
        """Resolve what calling `model` needs (endpoint, key variable, prices), or raise a typed
        error now when the model cannot be reached this way."""

    async def complete(self, request: LMRequest) -> LMResponse:
        """One attempt at `request` (its model prepared before); raises a typed `LMError`."""


def set_retry_after(err: LMError, seconds: float | None) -> LMError:
    """Attach a server's Retry-After to a retryable error (the retry loop reads `retry_after_of`)."""
    if seconds is not None and err.retryable:
        vars(err)["retry_after"] = seconds
    return err


def retry_after_of(err: LMError) -> float | None:
    value = vars(err).get("retry_after")
    return float(value) if isinstance(value, int | float) else None


def parse_retry_after(headers: Any) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (a number; an HTTP date is ignored)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return float(ms) / 1000.0
        value = headers.get("retry-after")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def read_choice(data: Any, request: LMRequest, model: str) -> tuple[str, str | None]:
    """The text and finish_reason of an OpenAI-style chat completion dict.

    Raises:
        LMError: lm-bad-response when there is no choice, or no text (a refusal is named).
    """
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise LMError(
            "lm-bad-response", "the response has no choices", node=request.node, model=model, hint=BAD_RESPONSE_HINT
        )
    choice = choices[0]
    message = choice.get("message") or {}
    text = message.get("content") if isinstance(message, dict) else None
    finish = choice.get("finish_reason")
    finish = finish if finish is None or isinstance(finish, str) else str(finish)
    if not text or not isinstance(text, str):
        refusal = message.get("refusal") if isinstance(message, dict) else None
        what = "empty" if text == "" else "null"
        detail = f"; the model refused: {str(refusal)[:200]}" if refusal else ""
        raise LMError(
            "lm-bad-response",
            f"the response's message content is {what} (finish_reason={finish}){detail}",
            node=request.node,
            model=model,
            hint=BAD_RESPONSE_HINT,
        )
    return text, finish


def usage_of(data: Any) -> tuple[int, int]:
    usage = data.get("usage") if isinstance(data, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def openai_response(
    data: Any, request: LMRequest, model: str, latency: float, price_in: float = 0.0, price_out: float = 0.0
) -> LMResponse:
    """An `LMResponse` from an OpenAI-style completion dict, cost from the per-token prices."""
    text, finish = read_choice(data, request, model)
    pt, ct = usage_of(data)
    return LMResponse.model_construct(
        text=text,
        model=model,
        prompt_tokens=pt,
        completion_tokens=ct,
        cost_usd=pt * price_in + ct * price_out,
        latency_s=latency,
        finish_reason=finish,
        cached=False,
    )
