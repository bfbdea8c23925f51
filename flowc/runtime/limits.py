"""The model's context window, checked before a request is sent.

`ContextGuard` wraps a model client and refuses, with `context-window-exceeded`, a request that
certainly does not fit its model's context window: the prompt's characters at 6 per token (more
than real text averages, so the estimate stays below the true count) plus `max_tokens`. A request
near the limit is sent, and the provider decides. The window comes from the embedded model's
profile (`local/...`), else from litellm's model map (read from its JSON file, without importing
litellm: transports/catalog.py); a model neither knows (a custom server) is not checked.

The size of each input value is limited earlier, when inputs are read (datasets.py).
"""

from __future__ import annotations

from collections.abc import Callable

from flowc.errors import LMError
from flowc.runtime.lm import LMClient, LMRequest, LMResponse

CHARS_PER_TOKEN_AT_MOST = 6

WindowOf = Callable[[str], int | None]


def default_window(model: str) -> int | None:
    """The context window of `model` in tokens, or None when flowc cannot know it."""
    if model.startswith("local/"):
        from flowc.runtime.local_profiles import PROFILES

        name = model.removeprefix("local/")
        profile = PROFILES.get(name)
        return profile.context if profile is not None else None
    from flowc.runtime.transports.catalog import model_info  # litellm's model map, read without litellm

    value = model_info(model).get("max_input_tokens") or model_info(model).get("max_tokens")
    return int(value) if isinstance(value, int | float) and value > 0 else None


def least_tokens(request: LMRequest) -> int:
    """A count of the prompt's tokens that the real count is (practically) never below."""
    return sum(len(m.content) for m in request.messages) // CHARS_PER_TOKEN_AT_MOST


class ContextGuard:
    """An `LMClient` that refuses requests too large for their model's context window."""

    def __init__(self, inner: LMClient, window_of: WindowOf = default_window) -> None:
        self.inner = inner
        self._window_of = window_of
        self._windows: dict[str, int | None] = {}

    async def complete(self, request: LMRequest) -> LMResponse:
        if request.model not in self._windows:
            self._windows[request.model] = self._window_of(request.model)
        window = self._windows[request.model]
        if window is not None:
            need = least_tokens(request) + (request.max_tokens or 0)
            if need > window:
                chars = sum(len(m.content) for m in request.messages)
                raise LMError(
                    "context-window-exceeded",
                    f"the prompt is {chars:,} characters (at least ~{least_tokens(request):,} tokens)"
                    + (f" plus max_tokens {request.max_tokens}" if request.max_tokens else "")
                    + f"; the model's context window is {window:,} tokens",
                    node=request.node,
                    model=request.model,
                    hint="shorten the inputs (or retrieve fewer passages), or use a model with a larger context",
                )
        return await self.inner.complete(request)

    def __getattr__(self, name: str) -> object:
        # Everything else (prepare, close, counters) is the wrapped client's.
        return getattr(self.inner, name)
