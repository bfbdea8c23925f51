"""The litellm adapter: every real model call goes through `LiteLLMClient.complete`.

This is the only module (with `local_provider.py`) that imports litellm. It maps every litellm /
OpenAI SDK exception to flowc's typed `LMError`s, retries what is retryable with exponential
backoff and jitter (a server's Retry-After wins when it is longer), bounds each attempt with a
timeout, then tries the policy's fallbacks in order. Rate limits (RPM/TPM) are acquired per
attempt from a `RateLimiters` registry that the caller may share between clients.

The hot path is kept lean because litellm itself costs milliseconds per call: whatever depends
only on the model id (provider, price per token, endpoint, keyword arguments, limiter) is
resolved once into a `_Route` and reused; litellm's own retries are switched off (flowc's loop
is the only one, so a server sees exactly the attempts flowc makes); cost is computed from the
price resolved once instead of litellm's per-call cost lookup.

API keys are read by litellm from the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...); flowc
never takes one as an argument, and error messages are scrubbed of any secret-looking value
from the environment before they are raised.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from flowc.errors import (
    FlowcError,
    LMConnectionError,
    LMError,
    LMRateLimited,
    LMServerError,
    LMTimeout,
)
from flowc.runtime import attempts, local_provider
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.policy import DEFAULT_POLICY, ModelPolicy
from flowc.runtime.ratelimit import RateLimiters, estimate_tokens
from flowc.runtime.secrets import refuse_credentials, scrub

# litellm fetches its cost map over the network at import unless told otherwise; there is no
# network here, and the bundled map is what flowc wants anyway. Must precede the import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import openai
from litellm.llms.custom_llm import CustomLLM

# litellm prints "Give Feedback / Get Help" banners to stdout on every exception; flowc reports
# its own typed errors instead.
litellm.suppress_debug_info = True

# Extra seconds given to litellm's own timeout before flowc's guard fires: the guard exists only
# so that a provider that ignores its timeout (e.g. a blocking local call) cannot hang a run.
_GUARD_MARGIN_S = 1.0
_LOOPBACK = ("http://127.0.0.1", "http://localhost", "http://[::1]")
# Placeholder credential for OpenAI-compatible servers on this machine (flowc serve-model, vLLM,
# llama.cpp): they need no key, but the OpenAI SDK refuses to send a request without one.
_LOOPBACK_KEY = "no-key-needed"

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class _Route:
    """Everything about calling one model id that does not depend on the request."""

    model: str
    policy: ModelPolicy
    provider: str
    kwargs: dict[str, Any]  # fixed keyword arguments for litellm.acompletion
    price_in: float  # USD per prompt token (0.0 when unknown or local)
    price_out: float
    env_keys: tuple[str, ...]  # the env vars litellm reads for this provider (for hints)


class LiteLLMClient:
    """An `LMClient` that calls any litellm provider, plus the embedded `local/...` models.

    Args:
        policies: model id -> `ModelPolicy`; a model not named here gets `default_policy`.
        limiters: the rate-limit registry; pass one shared instance to every client of a run
            so RPM/TPM hold across all of them. Built from `policies` when omitted.
        default_policy: the policy of models not named in `policies`.
        rng: the jitter source (seed it for reproducible backoff in tests).
        sleep: the backoff sleep (injectable for tests).
    """

    def __init__(
        self,
        policies: Mapping[str, ModelPolicy] | None = None,
        *,
        limiters: RateLimiters | None = None,
        default_policy: ModelPolicy = DEFAULT_POLICY,
        rng: random.Random | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._policies = dict(policies or {})
        self._default = default_policy
        self._limiters = limiters if limiters is not None else RateLimiters()
        for model, pol in self._policies.items():
            if pol.rpm is not None or pol.tpm is not None:
                self._limiters.set_limits(model, pol.rpm, pol.tpm)
        self._rng = rng or random.Random()
        self._sleep = sleep
        self._routes: dict[str, _Route] = {}

    # -- public --------------------------------------------------------------------------

    @property
    def limiters(self) -> RateLimiters:
        """The rate-limit registry this client acquires from (shared when passed in)."""
        return self._limiters

    async def complete(self, request: LMRequest) -> LMResponse:
        """Answer `request`, retrying and falling back as its model's policy says.

        Raises:
            LMError: a typed subclass (code lm-timeout, lm-rate-limited, lm-server-error,
                lm-connection, lm-auth, lm-bad-request, lm-bad-response) naming the node and
                the model; when fallbacks were tried, the notes list how each one failed.
        """
        route = self._routes.get(request.model) or self._resolve(request.model)
        if not route.policy.fallbacks:
            return await self._call_with_retries(route, request)
        try:
            return await self._call_with_retries(route, request)
        except LMError as e:
            first = e
        # Fallbacks run outside the except block, so their errors do not chain onto the first.
        failures = []
        for fallback in route.policy.fallbacks:
            fb_route = self._routes.get(fallback) or self._resolve(fallback, inherit=route.policy)
            try:
                return await self._call_with_retries(fb_route, request)
            except LMError as e:
                failures.append(f"{fallback}: {e.code}: {e.diagnostic.message}")
        # The primary model's error is the one reported; the fallbacks' ride along as notes.
        first.diagnostic = replace(
            first.diagnostic, notes=(*first.diagnostic.notes, *(f"fallback {f}" for f in failures))
        )
        raise first

    def policy(self, model: str) -> ModelPolicy:
        """The policy that applies to `model`."""
        return self._policies.get(model, self._default)

    def prepare(self, *models: str) -> None:
        """Resolve models ahead of the first call (the executor may call this at load time),
        so a bad model id fails before any work is done."""
        for m in models:
            self._routes.get(m) or self._resolve(m)

    # -- resolution, once per model ------------------------------------------------------

    def _resolve(self, model: str, inherit: ModelPolicy | None = None) -> _Route:
        policy = self._policies.get(model) or (
            ModelPolicy(
                retries=inherit.retries,
                timeout_s=inherit.timeout_s,
                backoff_base_s=inherit.backoff_base_s,
                backoff_max_s=inherit.backoff_max_s,
            )
            if inherit is not None
            else self._default
        )
        if model.startswith("local/"):
            register_local()
            local_provider.resolve_model_path(model)  # fail now, with the install hint
            provider, price_in, price_out = "local", 0.0, 0.0
            env_keys: tuple[str, ...] = ()
        else:
            try:
                _, provider, _, _ = litellm.get_llm_provider(model, api_base=policy.api_base)
            except Exception as e:
                raise LMError(
                    "lm-bad-request",
                    "litellm does not know this model's provider",
                    model=model,
                    hint="name models as '<provider>/<model>', e.g. 'openai/gpt-4o-mini', "
                    "'anthropic/claude-3-5-haiku-latest', 'ollama/llama3', or 'local/smollm2'",
                ) from e
            price_in, price_out = _prices(model)
            env_keys = _env_keys(model)
        kwargs: dict[str, Any] = {"model": model, "max_retries": 0, "num_retries": 0}
        if policy.api_base:
            kwargs["api_base"] = policy.api_base
            if policy.api_base.startswith(_LOOPBACK) and not any(os.environ.get(k) for k in env_keys):
                kwargs["api_key"] = _LOOPBACK_KEY
        if policy.timeout_s is not None:
            kwargs["timeout"] = policy.timeout_s
        if policy.rpm is not None or policy.tpm is not None:
            self._limiters.set_limits(model, policy.rpm, policy.tpm)
        route = _Route(model, policy, provider, kwargs, price_in, price_out, env_keys)
        self._routes[model] = route
        return route

    # -- one model: attempts, backoff ----------------------------------------------------

    async def _call_with_retries(self, route: _Route, request: LMRequest) -> LMResponse:
        attempt = 0
        while True:
            started = time.perf_counter()
            try:
                return await self._attempt(route, request)
            except LMError as e:
                retry_after = getattr(e, "retry_after", None)
                if not e.retryable or attempt >= route.policy.retries:
                    _report_attempt(route, attempt, e, started, None)
                    raise
                attempt += 1
                wait = route.policy.backoff_s(attempt, self._rng.random())
                if retry_after is not None:
                    wait = max(wait, min(retry_after, route.policy.backoff_max_s))
                _report_attempt(route, attempt - 1, e, started, wait)
                await self._sleep(wait)

    async def _attempt(self, route: _Route, request: LMRequest) -> LMResponse:
        kwargs = dict(route.kwargs)
        kwargs["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.api_base and route.model == request.model:  # a fallback keeps its own endpoint
            kwargs["api_base"] = request.api_base
        if request.timeout_s is not None:
            kwargs["timeout"] = request.timeout_s
        if request.extra:
            refuse_credentials(request)
            kwargs.update(request.extra)
        if request.constraint:  # read by llama.cpp (embedded or served); see constraints.py
            kwargs["extra_body"] = {**kwargs.get("extra_body", {}), **request.constraint}
        timeout = kwargs.get("timeout")

        limiter = self._limiters.get(route.model)
        reservation = await limiter.acquire(estimate_tokens(request)) if limiter is not None else None
        # The exception the caller may be handling right now (e.g. a repair call after a parse
        # error): an error of this call chains onto it, and classifying must stop there.
        outer = sys.exc_info()[1]
        start = time.perf_counter()
        try:
            if timeout is None:
                raw = await litellm.acompletion(**kwargs)
            else:  # asyncio.timeout, not wait_for: no extra task per call (~0.2 ms of CPU each)
                async with asyncio.timeout(timeout + _GUARD_MARGIN_S):
                    raw = await litellm.acompletion(**kwargs)
        except BaseException as e:
            if reservation is not None:
                reservation.settle(None)
            if isinstance(e, asyncio.CancelledError | KeyboardInterrupt | SystemExit):
                raise
            # A flowc error raised inside a provider (the local model failing to load) already
            # says what is wrong; litellm wraps it, so unwrap it instead of re-mapping.
            chain = _chain(e, outer)
            inner = next((c for c in chain if isinstance(c, FlowcError) and not isinstance(c, LMError)), None)
            if inner is not None:
                raise inner from e
            raise _map_error(e, chain, route, request) from e
        latency = time.perf_counter() - start
        try:
            response = self._to_response(raw, route, request, latency)
        except LMError:
            if reservation is not None:
                reservation.settle(None)
            raise
        if reservation is not None:
            reservation.settle(response.total_tokens)
        return response

    @staticmethod
    def _to_response(raw: Any, route: _Route, request: LMRequest, latency: float) -> LMResponse:
        choices = getattr(raw, "choices", None)
        if not choices:
            raise LMError(
                "lm-bad-response",
                "the response has no choices",
                node=request.node,
                model=route.model,
                hint=_BAD_RESPONSE_HINT,
            )
        choice = choices[0]
        message = getattr(choice, "message", None)
        text = getattr(message, "content", None)
        finish = getattr(choice, "finish_reason", None)
        if not text:
            what = "empty" if text == "" else "null"
            raise LMError(
                "lm-bad-response",
                f"the response's message content is {what} (finish_reason={finish})",
                node=request.node,
                model=route.model,
                hint=_BAD_RESPONSE_HINT,
            )
        usage = getattr(raw, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        hidden = getattr(raw, "_hidden_params", None) or {}
        cost = hidden.get("response_cost")
        if not isinstance(cost, int | float):
            cost = pt * route.price_in + ct * route.price_out
        return LMResponse(
            text=text,
            model=route.model,
            prompt_tokens=pt,
            completion_tokens=ct,
            cost_usd=float(cost),
            latency_s=latency,
            finish_reason=finish,
        )


def _report_attempt(route: _Route, attempt: int, e: LMError, started: float, retry_in: float | None) -> None:
    """Tell the recorder of this call (attempts.py) that attempt `attempt` (0-based) failed."""
    attempts.report(
        attempts.AttemptRecord(
            model=route.model,
            attempt=attempt + 1,
            error_code=e.code,
            error=e.diagnostic.message,
            latency_s=time.perf_counter() - started,
            retry_in_s=retry_in,
        )
    )


_BAD_RESPONSE_HINT = "the provider answered without text; check the model id and max_tokens, or add a fallback model"


# -- resolution helpers ---------------------------------------------------------------------


def _prices(model: str) -> tuple[float, float]:
    """USD per prompt and per completion token from litellm's bundled map; 0.0 when unknown."""
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return 0.0, 0.0
    return float(info.get("input_cost_per_token") or 0.0), float(info.get("output_cost_per_token") or 0.0)


def context_window(model: str) -> int | None:
    """The most input tokens `model` takes, from litellm's bundled model map; None when unknown."""
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return None
    value = info.get("max_input_tokens") or info.get("max_tokens")
    return int(value) if isinstance(value, int | float) and value > 0 else None


def _env_keys(model: str) -> tuple[str, ...]:
    """The environment variables litellm reads for `model`'s credentials (names only)."""
    try:
        env = litellm.validate_environment(model)
    except Exception:
        return ()
    return tuple(env.get("missing_keys") or ()) or _present_keys(model)


def _present_keys(model: str) -> tuple[str, ...]:
    # validate_environment lists only the missing keys; when all are present, name the usual one.
    provider = model.split("/", 1)[0] if "/" in model else "openai"
    guess = f"{provider.upper()}_API_KEY"
    return (guess,) if guess in os.environ else ()


# -- error mapping --------------------------------------------------------------------------


def _chain(exc: BaseException, stop: BaseException | None = None) -> list[BaseException]:
    """`exc` and the exceptions it was raised from, up to (not including) `stop`."""
    out: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur is not stop and len(out) < 12:
        out.append(cur)
        cur = cur.__cause__ or cur.__context__
    return out


def _retry_after(chain: list[BaseException]) -> float | None:
    """Seconds from a Retry-After (or retry-after-ms) header, wherever litellm put it."""
    for e in chain:
        for attr in ("litellm_response_headers", "headers"):
            headers = getattr(e, attr, None)
            if headers is None:
                continue
            try:
                ms = headers.get("retry-after-ms")
                if ms is not None:
                    return float(ms) / 1000.0
                value = headers.get("retry-after")
                if value is not None:
                    return float(value)
            except (TypeError, ValueError, AttributeError):
                continue
        response = getattr(e, "response", None)
        headers = getattr(response, "headers", None)
        if headers is not None and hasattr(headers, "get"):
            try:
                value = headers.get("retry-after")
                if value is not None:
                    return float(value)
            except (TypeError, ValueError):
                continue
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # litellm prefixes "litellm.RateLimitError: RateLimitError: OpenAIException - "; keep the tail.
    if " - " in text:
        text = text.split(" - ", 1)[1]
    return scrub(text[:300])


def _map_error(exc: BaseException, chain: list[BaseException], route: _Route, request: LMRequest) -> LMError:
    """Translate one litellm / OpenAI SDK / asyncio exception (and its `chain`) into a typed LMError."""
    node, model = request.node, route.model
    msg = _short(exc)
    timeout = request.timeout_s or route.kwargs.get("timeout")

    def has(*types: type[BaseException]) -> bool:
        return any(isinstance(e, types) for e in chain)

    err: LMError
    if has(TimeoutError, litellm.exceptions.Timeout, openai.APITimeoutError):
        err = LMTimeout(
            "lm-timeout",
            f"no answer within {timeout} s" if timeout else msg,
            node=node,
            model=model,
            hint="raise the model's timeout in the spec, lower max_tokens, or add a fallback model",
        )
    elif has(litellm.exceptions.RateLimitError, openai.RateLimitError):
        err = LMRateLimited(
            "lm-rate-limited",
            msg,
            node=node,
            model=model,
            hint="lower the model's rpm/tpm in the spec so flowc paces calls, raise retries, or add a fallback model",
        )
    elif has(
        litellm.exceptions.AuthenticationError,
        litellm.exceptions.PermissionDeniedError,
        openai.AuthenticationError,
        openai.PermissionDeniedError,
    ) or _missing_credentials(chain):
        keys = " or ".join(route.env_keys) or "the provider's API key variable"
        err = LMError(
            "lm-auth",
            msg,
            node=node,
            model=model,
            hint=f"set {keys} in the environment (flowc reads keys only from there)",
        )
    elif has(litellm.exceptions.ContextWindowExceededError):
        err = LMError(
            "lm-bad-request",
            msg,
            node=node,
            model=model,
            hint="the prompt is longer than the model's context: retrieve fewer passages, "
            "shorten the prompt, or use a model with a longer context",
        )
    elif has(ValueError) and _json_error(chain):
        err = LMError(
            "lm-bad-response",
            f"the server's answer is not valid JSON ({msg})",
            node=node,
            model=model,
            hint="check that api_base points at an OpenAI-compatible server",
        )
    elif has(litellm.exceptions.APIConnectionError, openai.APIConnectionError, ConnectionError):
        base = request.api_base or route.kwargs.get("api_base")
        err = LMConnectionError(
            "lm-connection",
            msg,
            node=node,
            model=model,
            hint=f"check that the server at {base} is running"
            if base
            else "check the network and the provider's status",
        )
    elif has(
        litellm.exceptions.BadRequestError,
        litellm.exceptions.NotFoundError,
        litellm.exceptions.UnprocessableEntityError,
        litellm.exceptions.UnsupportedParamsError,
        openai.BadRequestError,
        openai.NotFoundError,
        openai.UnprocessableEntityError,
    ):
        err = LMError(
            "lm-bad-request",
            msg,
            node=node,
            model=model,
            hint="check the model id and the request settings (max_tokens, stop, extra)",
        )
    elif has(
        litellm.exceptions.InternalServerError,
        litellm.exceptions.ServiceUnavailableError,
        litellm.exceptions.BadGatewayError,
        litellm.exceptions.APIError,
        openai.APIStatusError,
    ):
        err = LMServerError(
            "lm-server-error",
            msg,
            node=node,
            model=model,
            hint="the provider failed; raise retries or add a fallback model",
        )
    else:
        err = LMServerError(
            "lm-server-error",
            f"{type(exc).__name__}: {msg}",
            node=node,
            model=model,
            hint="an unexpected error from the provider; raise retries or add a fallback",
        )
    retry_after = _retry_after(chain) if err.retryable else None
    if retry_after is not None:
        # LMError has no field for it; the retry loop reads it back with getattr.
        vars(err)["retry_after"] = retry_after
    return err


def _missing_credentials(chain: list[BaseException]) -> bool:
    # The OpenAI SDK raises a bare OpenAIError (not an APIError: nothing was sent) when no key is set.
    return any(
        (isinstance(e, openai.OpenAIError) and not isinstance(e, openai.APIError) and "credential" in str(e).lower())
        or ("api_key" in str(e) and "Missing" in str(e))
        for e in chain
    )


def _json_error(chain: list[BaseException]) -> bool:
    return any(isinstance(e, json.JSONDecodeError) for e in chain)


def token_prices(model: str) -> tuple[float, float]:
    """USD per prompt token and per completion token for `model` (0.0 for local or unknown models);
    optimizers use it to project the cost of a job before spending anything."""
    if model.startswith("local/"):
        return 0.0, 0.0
    return _prices(model)


# -- the embedded models as a litellm custom provider ---------------------------------------------
# local_provider.py loads and serves GGUF weights; this adapter is what litellm calls for `local/...`.

LOCAL_PROVIDER = local_provider.PROVIDER


def _raise_for_error(result: dict[str, Any], model: str) -> None:
    error = result.get("error")
    if not error:
        return
    if not isinstance(error, dict):
        error = {"message": str(error)}
    message = str(error.get("message", error))
    kind = error.get("type", "")
    code = str(error.get("code", ""))
    status = int(code) if code.isdigit() else 500
    if kind == "timeout":
        raise litellm.Timeout(message=message, model=model, llm_provider=LOCAL_PROVIDER)
    if kind == "exceed_context_size_error":
        raise litellm.ContextWindowExceededError(message=message, model=model, llm_provider=LOCAL_PROVIDER)
    if status == 400:
        raise litellm.BadRequestError(message=message, model=model, llm_provider=LOCAL_PROVIDER)
    raise litellm.InternalServerError(message=message, model=model, llm_provider=LOCAL_PROVIDER)


def _to_model_response(result: dict[str, Any], model: str) -> litellm.ModelResponse:
    usage = result.get("usage") or {}
    return litellm.ModelResponse(
        id=result.get("id") or f"chatcmpl-{uuid.uuid4().hex}",
        created=int(result.get("created") or time.time()),
        model=model,
        choices=result.get("choices") or [],
        usage={
            "prompt_tokens": int(usage.get("prompt_tokens", 0)),
            "completion_tokens": int(usage.get("completion_tokens", 0)),
            "total_tokens": int(usage.get("total_tokens", 0)),
        },
    )


class LocalLLM(CustomLLM):
    """litellm's handler for `local/...` models (registered by `register()`)."""

    def completion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> litellm.ModelResponse:
        """Blocking completion (litellm.completion)."""
        full = f"{LOCAL_PROVIDER}/{model}"
        loaded = local_provider.load(full)
        timeout = local_provider.timeout_seconds(kwargs.get("timeout"))
        deadline = time.monotonic() + timeout if timeout is not None else None
        result = loaded.chat(local_provider.chat_body(messages, kwargs.get("optional_params") or {}), deadline)
        _raise_for_error(result, full)
        return _to_model_response(result, full)

    async def acompletion(self, model: str, messages: list[Any], *args: Any, **kwargs: Any) -> litellm.ModelResponse:
        """Async completion (litellm.acompletion): the blocking call runs in the model's pool."""
        full = f"{LOCAL_PROVIDER}/{model}"
        loaded = local_provider._by_id.get(full)
        if loaded is None:
            # The first call loads the weights (about a second): off the event loop too.
            loaded = await asyncio.get_running_loop().run_in_executor(None, local_provider.load, full)
        timeout = local_provider.timeout_seconds(kwargs.get("timeout"))
        deadline = time.monotonic() + timeout if timeout is not None else None
        body = local_provider.chat_body(messages, kwargs.get("optional_params") or {})
        cancel = threading.Event()
        future = asyncio.get_running_loop().run_in_executor(loaded.pool, loaded.chat, body, deadline, cancel)
        try:
            result = await (asyncio.wait_for(future, timeout) if timeout is not None else future)
        except TimeoutError as e:
            raise litellm.Timeout(
                message=f"no answer within {timeout} s", model=full, llm_provider=LOCAL_PROVIDER
            ) from e
        finally:
            # On a timeout or a cancelled task the worker thread is still decoding: stop it.
            if not future.done():
                cancel.set()
        _raise_for_error(result, full)
        return _to_model_response(result, full)


_local_handler: LocalLLM | None = None


def register_local() -> None:
    """Make `local/...` model ids callable through litellm (idempotent)."""
    global _local_handler
    if _local_handler is not None and any(i.get("provider") == LOCAL_PROVIDER for i in litellm.custom_provider_map):
        return
    _local_handler = LocalLLM()
    litellm.custom_provider_map = [
        *(i for i in litellm.custom_provider_map if i.get("provider") != LOCAL_PROVIDER),
        {"provider": LOCAL_PROVIDER, "custom_handler": _local_handler},
    ]
