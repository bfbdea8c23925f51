"""The litellm transport: every provider the native path does not serve (Anthropic, Gemini, Bedrock,
Ollama's own API, ...), OpenAI's reasoning models, and any model declared `transport: litellm`.

This is the only module that imports litellm, and only `client.ModelClient` imports it, the first
time a model needs it: a run that uses only native or embedded models never loads litellm (about
4 s of start-up on a 2-core machine). What stays here is what only litellm does: resolving a
provider, calling `litellm.acompletion`, and mapping litellm's and the OpenAI SDK's exceptions to
flowc's typed errors. Retries, limits and fallbacks are `ModelClient`'s; litellm's own retries are
off, so a server sees exactly the attempts flowc makes.

Keys: without an `api_base`, litellm reads the provider's key from the environment and sends it to
the provider's own endpoint. With a custom `api_base`, flowc passes the key explicitly: the
variable the spec named (`api_key_env`), else a placeholder, so litellm never falls back to the
provider's key for a host that is not the provider's (`endpoints.credential_for`).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, ClassVar

from flowc.errors import FlowcError, LMConnectionError, LMError, LMRateLimited, LMServerError, LMTimeout
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.policy import ModelPolicy
from flowc.runtime.secrets import refuse_credentials, scrub
from flowc.runtime.transports.base import BAD_RESPONSE_HINT, parse_retry_after, set_retry_after
from flowc.runtime.transports.endpoints import NO_KEY, Credential, credential_for, credential_problem, key_hint
from flowc.spec.endpoints import CREDENTIAL_HINT

# litellm fetches its cost map over the network at import unless told otherwise; there is no
# network here, and the bundled map is what flowc wants anyway. Must precede the import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import litellm
import openai

# litellm prints "Give Feedback / Get Help" banners to stdout on every exception; flowc reports
# its own typed errors instead.
litellm.suppress_debug_info = True

# Extra seconds given to litellm's own timeout before flowc's guard fires: the guard exists only
# so that a provider that ignores its timeout cannot hang a run.
_GUARD_MARGIN_S = 1.0
# Sent as the key to a custom api_base when the spec names none: the OpenAI SDK refuses to send a
# request without one, and it keeps litellm from reading the provider's key from the environment.
PLACEHOLDER_KEY = "no-key-needed"


@dataclass(frozen=True)
class _Route:
    model: str
    kwargs: dict[str, Any]  # fixed keyword arguments for litellm.acompletion (may hold a key: never logged)
    price_in: float
    price_out: float
    credential: Credential
    env_keys: tuple[str, ...]


class LiteLLMTransport:
    """Calls any litellm provider (see the module docstring)."""

    name: ClassVar[str] = "litellm"

    def __init__(self) -> None:
        self._policies: dict[str, ModelPolicy] = {}
        self._routes: dict[tuple[str, str | None], _Route] = {}

    def prepare(self, model: str, policy: ModelPolicy) -> None:
        if self._policies.get(model) == policy and (model, None) in self._routes:
            return
        self._policies[model] = policy
        route = self._route(model, None)  # a request without an api_base of its own: the policy's
        if policy.api_base is not None:
            self._routes[(model, policy.api_base)] = route

    async def complete(self, request: LMRequest) -> LMResponse:
        route = self._routes.get((request.model, request.api_base)) or self._route(request.model, request.api_base)
        if route.credential.named and _key_missing(route):
            raise LMError(
                "lm-auth",
                f"no API key: {route.credential.env} is not set",
                node=request.node,
                model=route.model,
                hint=f"set {route.credential.env} in the environment (the model's api_key_env)",
            )
        kwargs = dict(route.kwargs)
        kwargs["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        kwargs["temperature"] = request.temperature
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.timeout_s is not None:
            kwargs["timeout"] = request.timeout_s
        if request.extra:
            refuse_credentials(request)
            kwargs.update(request.extra)
        if request.constraint:
            constraint = dict(request.constraint)
            if "response_format" in constraint:  # a provider's structured output (litellm maps it per provider)
                kwargs["response_format"] = constraint.pop("response_format")
            if constraint:  # grammar / json_schema for a llama.cpp server
                kwargs["extra_body"] = {**kwargs.get("extra_body", {}), **constraint}
        timeout = kwargs.get("timeout")
        # The exception the caller may be handling right now (e.g. a repair call after a parse
        # error): an error of this call chains onto it, and classifying must stop there.
        outer = sys.exc_info()[1]
        start = time.perf_counter()
        try:
            if timeout is None:
                raw = await litellm.acompletion(**kwargs)
            else:  # asyncio.timeout, not wait_for: no extra task per call
                async with asyncio.timeout(timeout + _GUARD_MARGIN_S):
                    raw = await litellm.acompletion(**kwargs)
        except Exception as e:
            chain = _chain(e, outer)
            inner = next((c for c in chain if isinstance(c, FlowcError) and not isinstance(c, LMError)), None)
            if inner is not None:
                raise inner from e
            raise _map_error(e, chain, route, request) from e
        return _to_response(raw, route, request, time.perf_counter() - start)

    def _route(self, model: str, api_base: str | None) -> _Route:
        policy = self._policies.get(model) or ModelPolicy()
        base = api_base or policy.api_base
        try:
            litellm.get_llm_provider(model, api_base=base)
        except Exception as e:
            raise LMError(
                "lm-bad-request",
                "litellm does not know this model's provider",
                model=model,
                hint="name models as '<provider>/<model>', e.g. 'openai/gpt-4o-mini', "
                "'anthropic/claude-3-5-haiku-latest', 'ollama/llama3', or 'local/smollm2'",
            ) from e
        kwargs: dict[str, Any] = {"model": model, "max_retries": 0, "num_retries": 0}
        credential = credential_for(model, base, policy.api_key_env)
        if base:
            problem = credential_problem(base)
            if problem:
                raise LMError(
                    "lm-bad-request",
                    f"api_base refused: {problem}",
                    model=model,
                    hint=CREDENTIAL_HINT,
                )
            kwargs["api_base"] = base
        if credential.named or (base and credential is NO_KEY):
            # Explicit: the named variable's value, or a placeholder that keeps litellm from
            # reading the provider's key for a host that is not the provider's.
            kwargs["api_key"] = credential.value() or PLACEHOLDER_KEY
        if policy.timeout_s is not None:
            kwargs["timeout"] = policy.timeout_s
        price_in, price_out = _prices(model)
        route = _Route(model, kwargs, price_in, price_out, credential, _env_keys(model))
        self._routes[(model, api_base)] = route
        return route


def _key_missing(route: _Route) -> bool:
    return route.kwargs.get("api_key") in (None, PLACEHOLDER_KEY)


def _to_response(raw: Any, route: _Route, request: LMRequest, latency: float) -> LMResponse:
    choices = getattr(raw, "choices", None)
    if not choices:
        raise LMError(
            "lm-bad-response",
            "the response has no choices",
            node=request.node,
            model=route.model,
            hint=BAD_RESPONSE_HINT,
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
            hint=BAD_RESPONSE_HINT,
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


# -- resolution helpers ---------------------------------------------------------------------


def _prices(model: str) -> tuple[float, float]:
    """USD per prompt and per completion token from litellm's bundled map; 0.0 when unknown."""
    try:
        info = litellm.get_model_info(model)
    except Exception:
        return 0.0, 0.0
    return float(info.get("input_cost_per_token") or 0.0), float(info.get("output_cost_per_token") or 0.0)


def _env_keys(model: str) -> tuple[str, ...]:
    """The environment variables litellm reads for `model`'s credentials (names only)."""
    try:
        env = litellm.validate_environment(model)
    except Exception:
        return ()
    return tuple(env.get("missing_keys") or ())


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
            found = parse_retry_after(getattr(e, attr, None))
            if found is not None:
                return found
        found = parse_retry_after(getattr(getattr(e, "response", None), "headers", None))
        if found is not None:
            return found
    return None


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # litellm prefixes "litellm.RateLimitError: RateLimitError: OpenAIException - "; keep the tail.
    if " - " in text:
        text = text.split(" - ", 1)[1]
    return scrub(text[:300])


def _auth_hint(route: _Route) -> str:
    if route.credential.named:
        return f"set {route.credential.env} in the environment (the model's api_key_env)"
    if route.kwargs.get("api_base") and route.credential is NO_KEY:
        return "this server wants a key: put it in an environment variable and name it with api_key_env"
    keys = " or ".join(route.env_keys) or key_hint(route.model, route.credential)
    return f"set {keys} in the environment (flowc reads keys only from there)"


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
        err = LMError("lm-auth", msg, node=node, model=model, hint=_auth_hint(route))
    elif has(litellm.exceptions.ContextWindowExceededError):
        err = LMError(
            "lm-bad-request",
            msg,
            node=node,
            model=model,
            hint="the prompt is longer than the model's context: retrieve fewer passages, "
            "shorten the prompt, or use a model with a longer context",
        )
    elif has(ValueError) and any(isinstance(e, json.JSONDecodeError) for e in chain):
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
    return set_retry_after(err, _retry_after(chain))


def _missing_credentials(chain: list[BaseException]) -> bool:
    # The OpenAI SDK raises a bare OpenAIError (not an APIError: nothing was sent) when no key is set.
    return any(
        (isinstance(e, openai.OpenAIError) and not isinstance(e, openai.APIError) and "credential" in str(e).lower())
        or ("api_key" in str(e) and "Missing" in str(e))
        for e in chain
    )
