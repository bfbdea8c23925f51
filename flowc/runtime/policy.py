"""How flowc calls one model: retries, timeouts, rate limits, fallbacks and where it lives.

The executor builds one `ModelPolicy` per model declared in a spec and hands the mapping to
`ModelClient`; nothing here does I/O, so a policy can be built, compared and hashed freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from flowc.errors import FlowcError

Transport = Literal["auto", "native", "litellm"]


@dataclass(frozen=True)
class ModelPolicy:
    """Per-model call settings.

    Attributes:
        retries: how many times a retryable failure (timeout, 429, 5xx, connection) is tried
            again on the same model before moving to the fallbacks; 0 means one attempt.
        timeout_s: the limit of one attempt in seconds; None leaves the provider's default.
        rpm: requests per minute allowed across every concurrent caller; None = unlimited.
        tpm: tokens (prompt + completion) per minute across every caller; None = unlimited.
        fallbacks: model ids tried in order when this model keeps failing; each is called
            under its own policy when one is given, otherwise under this one.
        api_base: the endpoint of an OpenAI-compatible server (vLLM, Ollama, `flowc serve-model`).
        backoff_base_s: the first retry waits about this long; each further retry doubles it.
        backoff_max_s: no single wait (backoff or a server's Retry-After) is longer than this.
        transport: how calls go: `native` (flowc's own HTTP client, for OpenAI-compatible
            servers), `litellm`, or `auto` (native where it serves the model, else litellm).
            The embedded `local/` models always run in process.
        api_key_env: the environment variable holding the key for `api_base`; without it a
            custom api_base gets no key (a provider's key goes only to its own endpoints).
    """

    retries: int = 2
    timeout_s: float | None = None
    rpm: int | None = None
    tpm: int | None = None
    fallbacks: tuple[str, ...] = field(default=())
    api_base: str | None = None
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    transport: Transport = "auto"
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.retries < 0:
            problems.append(f"retries must be >= 0, got {self.retries}")
        if self.timeout_s is not None and self.timeout_s <= 0:
            problems.append(f"timeout_s must be > 0, got {self.timeout_s}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                problems.append(f"{name} must be > 0, got {value}")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0:
            problems.append("backoff_base_s and backoff_max_s must be >= 0")
        if self.transport not in ("auto", "native", "litellm"):
            problems.append(f"transport must be auto, native or litellm, got {self.transport!r}")
        if problems:
            raise FlowcError(
                "invalid-value",
                "invalid model policy: " + "; ".join(problems),
                hint="fix the model's retries/timeout/rpm/tpm settings in the spec",
            )
        # Accept a list from callers that build policies from parsed YAML; keep it hashable.
        if not isinstance(self.fallbacks, tuple):
            object.__setattr__(self, "fallbacks", tuple(self.fallbacks))

    def backoff_s(self, attempt: int, jitter: float) -> float:
        """The wait before retry number `attempt` (1-based), with `jitter` drawn from [0, 1).

        "Equal jitter" (between half the exponential ceiling and all of it) spreads concurrent
        callers that failed together, so they do not retry in lockstep, while every retry still
        waits at least half the ceiling.
        """
        ceiling = min(self.backoff_max_s, self.backoff_base_s * (2 ** (attempt - 1)))
        return ceiling * (0.5 + 0.5 * jitter)


DEFAULT_POLICY = ModelPolicy()
