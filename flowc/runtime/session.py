"""Wiring for a real run: the model client from the spec's model declarations, the response
cache, the run store and the executor — what `flowc run` and `flowc eval` use, and users too:

    from flowc.runtime.session import open_executor
    ex = open_executor(flowc.compile("pipelines/agentic_rag.flow"))
    result = ex.run_sync({"question": "..."})
"""

from __future__ import annotations

import os
from pathlib import Path

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.runtime.cache import CachedLM, ResponseCache
from flowc.runtime.config import RunConfig
from flowc.runtime.executor import Executor
from flowc.runtime.limits import ContextGuard
from flowc.runtime.lm import LMClient
from flowc.runtime.policy import ModelPolicy
from flowc.runtime.ratelimit import RateLimiters
from flowc.runtime.store import RunStore
from flowc.runtime.tools import ToolRegistry


def home() -> Path:
    """Where flowc keeps runs and caches: $FLOWC_HOME, else ./.flowc (per project, like .git)."""
    return Path(os.environ.get("FLOWC_HOME", ".flowc"))


def policies(compiled: CompiledPipeline) -> dict[str, ModelPolicy]:
    """One policy per model id; when two declarations share an id, the stricter limits win."""
    out: dict[str, ModelPolicy] = {}
    specs = [compiled.spec, *(s.spec for s in compiled.subflows.values())]
    for spec in specs:
        for decl in spec.models.values():
            pol = ModelPolicy(
                retries=decl.retries,
                timeout_s=decl.timeout,
                rpm=decl.rpm,
                tpm=decl.tpm,
                fallbacks=tuple(decl.fallbacks),
                api_base=decl.api_base,
                transport=decl.transport,
                api_key_env=decl.api_key_env,
            )
            prev = out.get(decl.id)
            if prev is not None:
                pol = ModelPolicy(
                    retries=max(prev.retries, pol.retries),
                    timeout_s=pol.timeout_s or prev.timeout_s,
                    rpm=min(filter(None, (prev.rpm, pol.rpm)), default=None),
                    tpm=min(filter(None, (prev.tpm, pol.tpm)), default=None),
                    fallbacks=prev.fallbacks or pol.fallbacks,
                    api_base=prev.api_base or pol.api_base,
                    transport=prev.transport if prev.transport != "auto" else pol.transport,
                    api_key_env=prev.api_key_env or pol.api_key_env,
                )
            out[decl.id] = pol
    return out


def default_client(compiled: CompiledPipeline, *, limiters: RateLimiters | None = None) -> LMClient:
    """The model client under the spec's policies: native HTTP for OpenAI-compatible models, the
    embedded models in process, litellm for the other providers (imported only then).

    Pass one `limiters` to every client of a job (e.g. an optimizer's own client) so that the
    spec's RPM/TPM limits hold across all of them."""
    from flowc.runtime.adapters import preflight
    from flowc.runtime.client import ModelClient

    preflight(compiled)  # an adapter trained on another base fails now, on its `adapter:` line
    pols = policies(compiled)
    client = ModelClient(pols, limiters=limiters)
    for model_id in pols:  # a bad model id or a missing model file fails now, at its declaration
        try:
            client.prepare(model_id)
        except FlowcError as e:
            if e.diagnostic.span is not None:
                raise
            names = [n for n, m in compiled.spec.models.items() if m.id == model_id]
            where = compiled.spec.span("models", names[0]) if names else None
            raise FlowcError(e.code, e.diagnostic.message, span=where, hint=e.hint, notes=e.diagnostic.notes) from None
    return client


def open_executor(
    compiled: CompiledPipeline,
    *,
    lm: LMClient | None = None,
    cache: bool = True,
    store: bool = True,
    tools: ToolRegistry | None = None,
    config: RunConfig | None = None,
    root: Path | None = None,
) -> Executor:
    """An executor with the default client, a response cache and a run store under `root`."""
    base = root or home()
    # A prompt that cannot fit its model's window is refused before it is sent.
    client = lm or ContextGuard(default_client(compiled))
    if cache:
        client = CachedLM(client, ResponseCache(base / "cache.sqlite"), compiled.hash)
    run_store = RunStore(base / "runs.sqlite") if store else None
    return Executor(compiled, lm=client, tools=tools, store=run_store, config=config)
