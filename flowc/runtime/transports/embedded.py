"""The embedded transport: `local/...` models answered in process by llama.cpp (xllamacpp).

`local_provider` loads and serves the weights; this module turns an `LMRequest` into the
llama.cpp request it takes, runs the blocking call in the model's own thread pool (off the event
loop, one thread per slot), and types what comes back. No HTTP, no litellm.

A call that times out or whose caller is cancelled sets the call's cancel event, so llama.cpp stops
decoding at the next token and the slot is free for the calls queued behind it.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, ClassVar

from flowc.errors import LMError, LMServerError, LMTimeout
from flowc.runtime import local_provider
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.policy import ModelPolicy
from flowc.runtime.transports.base import openai_response


class EmbeddedTransport:
    """Calls the embedded `local/...` models (see the module docstring)."""

    name: ClassVar[str] = "embedded"

    def __init__(self) -> None:
        self._timeouts: dict[str, float | None] = {}

    def prepare(self, model: str, policy: ModelPolicy) -> None:
        local_provider.resolve_model_path(model)  # fail now, with the install hint
        self._timeouts[model] = policy.timeout_s

    async def complete(self, request: LMRequest) -> LMResponse:
        model = request.model
        loop = asyncio.get_running_loop()
        loaded = local_provider.loaded(model)
        if loaded is None:
            # The first call loads the weights (about a second): off the event loop too.
            loaded = await loop.run_in_executor(None, local_provider.load, model)
        timeout = request.timeout_s if request.timeout_s is not None else self._timeouts.get(model)
        deadline = time.monotonic() + timeout if timeout is not None else None
        body = local_provider.chat_body(
            [{"role": m.role, "content": m.content} for m in request.messages], _params(request)
        )
        cancel = threading.Event()
        start = time.perf_counter()
        future = loop.run_in_executor(loaded.pool, loaded.chat, body, deadline, cancel)
        try:
            if timeout is None:
                result = await future
            else:
                async with asyncio.timeout(timeout):
                    result = await future
        except TimeoutError as e:
            raise _timeout(request, f"no answer within {timeout} s") from e
        finally:
            # On a timeout or a cancelled task the worker thread is still decoding: stop it.
            if not future.done():
                cancel.set()
        latency = time.perf_counter() - start
        _raise_for_error(result, request)
        return openai_response(result, request, model, latency)


def _params(request: LMRequest) -> dict[str, Any]:
    """The request's settings in the shape `local_provider.chat_body` reads."""
    params: dict[str, Any] = {"temperature": request.temperature}
    if request.max_tokens is not None:
        params["max_tokens"] = request.max_tokens
    if request.seed is not None:
        params["seed"] = request.seed
    if request.stop:
        params["stop"] = list(request.stop)
    if request.extra:
        params.update(request.extra)
    if request.constraint:  # a grammar or JSON schema (constraints.py)
        params["extra_body"] = dict(request.constraint)
    return params


def _timeout(request: LMRequest, message: str) -> LMTimeout:
    return LMTimeout(
        "lm-timeout",
        message,
        node=request.node,
        model=request.model,
        hint="raise the model's timeout in the spec, lower max_tokens, or add a fallback model",
    )


def _raise_for_error(result: dict[str, Any], request: LMRequest) -> None:
    error = result.get("error")
    if not error:
        return
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = str(error.get("message", error))
    kind = error.get("type", "")
    code = str(error.get("code", ""))
    if kind == "timeout":
        raise _timeout(request, message)
    if kind == "exceed_context_size_error":
        raise LMError(
            "lm-bad-request",
            message,
            node=request.node,
            model=request.model,
            hint="the prompt is longer than the model's context: retrieve fewer passages, "
            "shorten the prompt, or use a model with a longer context",
        )
    if code == "400":
        raise LMError(
            "lm-bad-request",
            message,
            node=request.node,
            model=request.model,
            hint="check the request settings (max_tokens, stop, extra) and the node's constraint",
        )
    raise LMServerError(
        "lm-server-error", message, node=request.node, model=request.model, hint="raise retries or add a fallback"
    )
