"""The native transport: OpenAI-compatible chat completions over one pooled aiohttp session.

It serves `openai/<model>` ids: OpenAI itself, and any OpenAI-compatible server behind an
`api_base` (vLLM, llama.cpp's server, Ollama's /v1, LM Studio, TGI, `flowc serve-model`). A call
is one POST of a JSON body and one JSON reply, so doing it directly costs a fraction of going
through litellm (docs/benchmarks.md, "The native transport"):

- one `aiohttp.ClientSession` per event loop (`pool.py`), shared by every client in the process,
  keeps connections alive between calls; aiohttp is imported on the first call that goes out;
- aiohttp, not httpx: on the fake server httpx's async client took 3x the CPU per sequential call
  and had a seventh of the throughput at concurrency 16 (`benchmarks/bench_runtime.py --sections h`);
- what a request sends besides its messages (model, temperature, max_tokens, seed, stop, the
  decoding constraint) is serialized once per distinct set of settings and reused, so a node's
  calls only serialize their messages;
- bodies and replies go through the standard json module: orjson would save ~10 us a call
  (dumps and loads of these small documents), not worth a compiled dependency when flowc's whole
  own work is ~70 us a call and the call itself milliseconds.

Errors are typed as on every path (lm-timeout, lm-rate-limited with the server's Retry-After,
lm-server-error, lm-connection, lm-auth, lm-bad-request, lm-bad-response); retries, limits and
fallbacks live in `client.ModelClient`. Keys follow `endpoints.credential_for`: a provider's key
goes only to the provider's own hosts. Proxies come from the usual environment variables
(HTTPS_PROXY, NO_PROXY); ~/.netrc is never read (its passwords could reach a spec's host).
"""

from __future__ import annotations

import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flowc.errors import LMConnectionError, LMError, LMRateLimited, LMServerError, LMTimeout
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.policy import ModelPolicy
from flowc.runtime.secrets import scrub
from flowc.runtime.transports.base import openai_response, parse_retry_after, set_retry_after
from flowc.runtime.transports.catalog import token_prices
from flowc.runtime.transports.endpoints import (
    NO_KEY,
    OPENAI_DEFAULT_BASE,
    Credential,
    credential_for,
    credential_problem,
    is_loopback,
    is_own_host,
    key_hint,
)
from flowc.spec.endpoints import CREDENTIAL_HINT
from flowc.version import __version__

PREFIX = "openai/"
# OpenAI chat-completion parameters a request's `extra` may carry on this path; a request with
# anything else (litellm's own options such as mock_response) goes through litellm instead.
BODY_PARAMS = frozenset(
    {
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "response_format",
        "user",
        "n",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "service_tier",
        "reasoning_effort",
        "max_completion_tokens",
        "metadata",
        "store",
    }
)
# OpenAI's reasoning models take other parameters (max_completion_tokens, no temperature); litellm
# knows their rules, so on OpenAI's own endpoint they go through it.
_REASONING = ("o1", "o3", "o4", "gpt-5", "codex")


def serves(model: str, policy: ModelPolicy) -> bool:
    """Whether the native transport takes `model` when the spec leaves the choice to flowc."""
    if not model.startswith(PREFIX):
        return False
    name = model[len(PREFIX) :]
    on_openai = policy.api_base is None or is_own_host("openai", policy.api_base)
    return not (on_openai and name.startswith(_REASONING))


def accepts(request: LMRequest) -> bool:
    """Whether this path can send `request` as it is (its extra settings are plain body fields)."""
    return not request.extra or BODY_PARAMS.issuperset(request.extra)


@dataclass
class _Route:
    """Everything about one (model, endpoint) that does not depend on the request."""

    model: str
    name: str  # the model as the server knows it (the id without "openai/")
    url: str
    base: str
    headers: dict[str, str]
    credential: Credential
    missing_key: bool
    proxy: str | None
    timeout_s: float | None
    price_in: float
    price_out: float
    # serialized settings -> the body's opening bytes, up to where the messages go
    prefixes: dict[tuple[Any, ...], tuple[Any, Any, bytes]] = field(default_factory=dict)


class NativeTransport:
    """OpenAI-compatible chat completions over aiohttp (see the module docstring)."""

    name: ClassVar[str] = "native"

    def __init__(self) -> None:
        self._policies: dict[str, ModelPolicy] = {}
        self._routes: dict[tuple[str, str | None], _Route] = {}

    def prepare(self, model: str, policy: ModelPolicy) -> None:
        if not model.startswith(PREFIX):
            raise LMError(
                "lm-bad-request",
                "the native transport serves only 'openai/<model>' ids (OpenAI and OpenAI-compatible servers)",
                model=model,
                hint="remove 'transport: native' to let flowc route the model through litellm",
            )
        self._policies[model] = policy
        route = self._route(model, None)  # a request without an api_base of its own: the policy's
        if policy.api_base is not None:
            self._routes[(model, policy.api_base)] = route

    async def complete(self, request: LMRequest) -> LMResponse:
        route = self._routes.get((request.model, request.api_base))
        if route is None:
            route = self._route(request.model, request.api_base)
        if route.missing_key:
            raise _missing_key(route, request)
        body = _body(route, request)
        timeout_s = request.timeout_s if request.timeout_s is not None else route.timeout_s
        from flowc.runtime.transports import pool  # aiohttp: loaded by the first call that goes out

        start = time.perf_counter()
        try:
            status, raw, headers = await pool.post(route.url, body, route.headers, timeout_s, route.proxy)
        except pool.Timeout as e:
            raise LMTimeout(
                "lm-timeout",
                f"no answer within {timeout_s} s",
                node=request.node,
                model=route.model,
                hint="raise the model's timeout in the spec, lower max_tokens, or add a fallback model",
            ) from e
        except pool.BrokenBody as e:
            raise LMConnectionError(
                "lm-connection",
                f"the connection to {route.base} broke before the whole answer arrived ({_reason(e)})",
                node=request.node,
                model=route.model,
                hint="a proxy or the server cut the reply short; raise retries, or check the server's logs",
            ) from e
        except pool.Unreachable as e:
            raise LMConnectionError(
                "lm-connection",
                f"cannot reach {route.base}: {_reason(e)}",
                node=request.node,
                model=route.model,
                hint=f"check that the server at {route.base} is running"
                if route.base != OPENAI_DEFAULT_BASE
                else "check the network and the provider's status",
            ) from e
        latency = time.perf_counter() - start
        if not 200 <= status < 300:
            raise _status_error(status, raw, headers, route, request)
        try:
            data = json.loads(raw)
        except ValueError as e:
            raise LMError(
                "lm-bad-response",
                f"the server's answer is not valid JSON ({_reason(e)})",
                node=request.node,
                model=route.model,
                hint="check that api_base points at an OpenAI-compatible server",
            ) from None
        return openai_response(data, request, route.model, latency, route.price_in, route.price_out)

    # -- resolution, once per (model, endpoint) ---------------------------------------------

    def _route(self, model: str, api_base: str | None) -> _Route:
        policy = self._policies.get(model) or ModelPolicy()
        base_from_spec = api_base or policy.api_base
        env_base = os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_BASE")
        if base_from_spec is not None:
            problem = credential_problem(base_from_spec)
            if problem:
                raise LMError(
                    "lm-bad-request",
                    f"api_base refused: {problem}",
                    model=model,
                    hint=CREDENTIAL_HINT,
                )
        base = (base_from_spec or env_base or OPENAI_DEFAULT_BASE).rstrip("/")
        credential = credential_for(model, base_from_spec, policy.api_key_env, env_base=base_from_spec is None)
        key = credential.value()
        headers = {"Content-Type": "application/json", "User-Agent": f"flowc/{__version__}"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
            org = os.environ.get("OPENAI_ORGANIZATION") if credential.env == "OPENAI_API_KEY" else None
            if org:
                headers["OpenAI-Organization"] = org
        # A key is required where one was chosen, except that a server on this machine may do without.
        missing = not key and credential is not NO_KEY and not (is_loopback(base) and not credential.named)
        price_in, price_out = token_prices(model)
        route = _Route(
            model=model,
            name=model[len(PREFIX) :],
            url=base + "/chat/completions",
            base=base,
            headers=headers,
            credential=credential,
            missing_key=missing,
            proxy=_proxy_for(base),
            timeout_s=policy.timeout_s,
            price_in=price_in,
            price_out=price_out,
        )
        self._routes[(model, api_base)] = route
        return route


# -- the request body ------------------------------------------------------------------------


def _body(route: _Route, request: LMRequest) -> bytes:
    """The JSON body: the settings' serialized prefix (built once per distinct settings) + messages."""
    extra = request.extra or None  # requests built one by one each bring a new empty dict
    key = (request.temperature, request.max_tokens, request.seed, request.stop, id(request.constraint), id(extra))
    cached = route.prefixes.get(key)
    if cached is not None and cached[0] is request.constraint and cached[1] is extra:
        prefix = cached[2]
    else:
        prefix = _prefix(route, request)
        if len(route.prefixes) > 256:  # settings vary per call (a caller building new dicts): bound it
            route.prefixes.clear()
        route.prefixes[key] = (request.constraint, extra, prefix)
    messages = [{"role": m.role, "content": m.content} for m in request.messages]
    return prefix + json.dumps(messages, ensure_ascii=False, separators=(",", ":")).encode() + b"}"


def _prefix(route: _Route, request: LMRequest) -> bytes:
    fields: dict[str, Any] = {"model": route.name, "temperature": request.temperature}
    if request.max_tokens is not None:
        fields["max_tokens"] = request.max_tokens
    if request.seed is not None:
        fields["seed"] = request.seed
    if request.stop:
        fields["stop"] = list(request.stop)
    if request.extra:
        fields.update(request.extra)
    if request.constraint:  # grammar / json_schema for llama.cpp, response_format for APIs (constraints.py)
        fields.update(request.constraint)
    fields.pop("messages", None)
    text = json.dumps(fields, ensure_ascii=False, separators=(",", ":"))
    return (text[:-1] + ',"messages":').encode()


def _proxy_for(base: str) -> str | None:
    if is_loopback(base):
        return None
    scheme = "https" if base.lower().startswith("https://") else "http"
    proxy = urllib.request.getproxies().get(scheme)
    host = base.split("://", 1)[-1].split("/", 1)[0]
    if proxy and urllib.request.proxy_bypass(host):
        return None
    return proxy


# -- errors -----------------------------------------------------------------------------------


def _reason(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return scrub(text.splitlines()[0][:300])


def _server_message(raw: bytes) -> str:
    try:
        data = json.loads(raw)
        err = data.get("error") if isinstance(data, dict) else None
        message = err.get("message") if isinstance(err, dict) else err if isinstance(err, str) else None
        if message:
            return scrub(str(message).strip()[:300])
    except ValueError:
        pass
    text = raw.decode("utf-8", "replace").strip()
    return scrub(text[:300]) if text else "no details"


def _status_error(status: int, raw: bytes, headers: Any, route: _Route, request: LMRequest) -> LMError:
    message = f"HTTP {status}: {_server_message(raw)}"
    node, model = request.node, route.model
    err: LMError
    if status in (401, 403):
        if route.credential is NO_KEY:
            hint = "this server wants a key: put it in an environment variable and name it with api_key_env"
        else:
            hint = f"set {key_hint(model, route.credential)} in the environment (flowc reads keys only from there)"
        err = LMError("lm-auth", message, node=node, model=model, hint=hint)
    elif status == 429:
        err = LMRateLimited(
            "lm-rate-limited",
            message,
            node=node,
            model=model,
            hint="lower the model's rpm/tpm in the spec so flowc paces calls, raise retries, or add a fallback model",
        )
    elif status == 408:
        err = LMTimeout("lm-timeout", message, node=node, model=model, hint="raise retries or the model's timeout")
    elif status == 409 or status >= 500:
        err = LMServerError(
            "lm-server-error",
            message,
            node=node,
            model=model,
            hint="the provider failed; raise retries or add a fallback model",
        )
    elif "context" in message.lower() and ("length" in message.lower() or "window" in message.lower()):
        err = LMError(
            "lm-bad-request",
            message,
            node=node,
            model=model,
            hint="the prompt is longer than the model's context: retrieve fewer passages, "
            "shorten the prompt, or use a model with a longer context",
        )
    else:
        err = LMError(
            "lm-bad-request",
            message,
            node=node,
            model=model,
            hint="check the model id and the request settings (max_tokens, stop, extra)",
        )
    return set_retry_after(err, parse_retry_after(headers))


def _missing_key(route: _Route, request: LMRequest) -> LMError:
    var = key_hint(route.model, route.credential)
    return LMError(
        "lm-auth",
        f"no API key: {var} is not set",
        node=request.node,
        model=route.model,
        hint=f"set {var} in the environment (flowc reads keys only from there)",
    )
