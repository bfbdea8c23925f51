"""The model client: every real model call goes through `ModelClient.complete`.

It routes each model to a transport (`flowc/runtime/transports/`): `native` for OpenAI-compatible
chat completions (OpenAI and any `api_base`), `embedded` for the in-process `local/` models,
`litellm` for every other provider and for models declared `transport: litellm`. A transport is
imported the first time a model needs it, so a run that uses only native or embedded models
never loads litellm.

Whatever the transport, the client does the same around each call: retries of retryable errors
with exponential backoff and jitter (a server's Retry-After wins when it is longer), RPM/TPM
limits acquired per attempt from a `RateLimiters` registry the caller may share between clients,
then the policy's fallbacks in order. Transports raise flowc's typed `LMError`s, naming the node
and the model; error text is scrubbed of secret-looking environment values.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from flowc.errors import LMError
from flowc.runtime import attempts
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.runtime.policy import DEFAULT_POLICY, ModelPolicy
from flowc.runtime.ratelimit import RateLimiters, estimate_tokens

if TYPE_CHECKING:
    from flowc.runtime.transports.base import Transport

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class _Route:
    model: str
    policy: ModelPolicy
    transport: Transport


class ModelClient:
    """An `LMClient` for any model: native HTTP, the embedded models, or litellm.

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
        self._transports: dict[str, Transport] = {}

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
            # A fallback is its own model at its own endpoint.
            fb_request = request.model_copy(update={"model": fallback, "api_base": None})
            try:
                return await self._call_with_retries(fb_route, fb_request)
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
        so a bad model id or a missing model file fails before any work is done."""
        for m in models:
            self._routes.get(m) or self._resolve(m)

    def transport_of(self, model: str) -> str:
        """The name of the transport `model`'s calls take: native, litellm or embedded."""
        route = self._routes.get(model) or self._resolve(model)
        return route.transport.name

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
        if policy.rpm is not None or policy.tpm is not None:
            self._limiters.set_limits(model, policy.rpm, policy.tpm)
        transport = self._transport(self._choose(model, policy))
        transport.prepare(model, policy)
        route = _Route(model, policy, transport)
        self._routes[model] = route
        return route

    @staticmethod
    def _choose(model: str, policy: ModelPolicy) -> str:
        if model.startswith("local/"):
            return "embedded"
        if policy.transport != "auto":
            return policy.transport
        from flowc.runtime.transports.native import serves

        return "native" if serves(model, policy) else "litellm"

    def _transport(self, name: str) -> Transport:
        """The transport called `name`, imported and built on first use."""
        found = self._transports.get(name)
        if found is not None:
            return found
        transport: Transport
        if name == "native":
            from flowc.runtime.transports.native import NativeTransport

            transport = NativeTransport()
        elif name == "embedded":
            from flowc.runtime.transports.embedded import EmbeddedTransport

            transport = EmbeddedTransport()
        else:
            from flowc.runtime.transports.litellm import LiteLLMTransport

            transport = LiteLLMTransport()
        self._transports[name] = transport
        return transport

    # -- one model: attempts, backoff ----------------------------------------------------

    async def _call_with_retries(self, route: _Route, request: LMRequest) -> LMResponse:
        transport = route.transport
        if transport.name == "native" and request.extra and not _native_accepts(request):
            # Settings only litellm understands (e.g. its mock_response): this request goes through it.
            transport = self._transport("litellm")
            transport.prepare(route.model, route.policy)
        attempt = 0
        limiter = self._limiters.get(route.model)
        while True:
            started = time.perf_counter()
            try:
                if limiter is None:
                    return await transport.complete(request)
                reservation = await limiter.acquire(estimate_tokens(request))
                try:
                    response = await transport.complete(request)
                except BaseException:
                    reservation.settle(None)
                    raise
                reservation.settle(response.total_tokens)
                return response
            except LMError as e:
                if not e.retryable or attempt >= route.policy.retries:
                    _report_attempt(route.model, attempt, e, started, None)
                    raise
                attempt += 1
                wait = route.policy.backoff_s(attempt, self._rng.random())
                retry_after = vars(e).get("retry_after")
                if isinstance(retry_after, int | float):
                    wait = max(wait, min(float(retry_after), route.policy.backoff_max_s))
                _report_attempt(route.model, attempt - 1, e, started, wait)
                await self._sleep(wait)


def _report_attempt(model: str, attempt: int, e: LMError, started: float, retry_in: float | None) -> None:
    """Tell the recorder of this call (attempts.py) that attempt `attempt` (0-based) failed."""
    attempts.report(
        attempts.AttemptRecord(
            model=model,
            attempt=attempt + 1,
            error_code=e.code,
            error=e.diagnostic.message,
            latency_s=time.perf_counter() - started,
            retry_in_s=retry_in,
        )
    )


def _native_accepts(request: LMRequest) -> bool:
    from flowc.runtime.transports.native import accepts

    return accepts(request)


def token_prices(model: str) -> tuple[float, float]:
    """USD per prompt token and per completion token for `model` (0.0 for local or unknown models);
    optimizers use it to project the cost of a job before spending anything. Read from litellm's
    bundled price map without importing litellm."""
    from flowc.runtime.transports.catalog import token_prices as prices

    return prices(model)
