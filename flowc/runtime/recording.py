"""The LM client a step uses: it records every call (answered or failed) in the step's trace, with
the attempts that failed before it (retries, fallbacks; see attempts.py), and opens an
OpenTelemetry span per call."""

from __future__ import annotations

from flowc.errors import FlowcError
from flowc.runtime.attempts import AttemptRecord, observe
from flowc.runtime.lm import LMClient, LMRequest, LMResponse
from flowc.runtime.telemetry import set_attributes, span
from flowc.runtime.trace import LMCallRecord


class RecordingClient:
    """Wraps the run's LM client for one step, recording every call it makes."""

    def __init__(self, inner: LMClient, records: list[LMCallRecord]) -> None:
        self.inner = inner
        self.records = records

    async def complete(self, request: LMRequest) -> LMResponse:
        with span("flowc.lm_call", **{"flowc.node": request.node, "flowc.model": request.model}) as sp:
            resp = await self._complete(request)
            set_attributes(
                sp,
                **{
                    "flowc.prompt_tokens": resp.prompt_tokens,
                    "flowc.completion_tokens": resp.completion_tokens,
                    "flowc.cached": resp.cached,
                },
            )
            return resp

    async def _complete(self, request: LMRequest) -> LMResponse:
        attempts: list[AttemptRecord] = []
        try:
            with observe(attempts.append):
                resp = await self.inner.complete(request)
        except Exception as e:  # a failed call is part of the trace too, whatever raised it
            error = f"{e.code}: {e.diagnostic.message}" if isinstance(e, FlowcError) else f"{type(e).__name__}: {e}"
            self.records.append(
                LMCallRecord.model_construct(
                    node=request.node,
                    model=request.model,
                    request=request.canonical(),
                    response=None,
                    error=error,
                    attempts=attempts,
                )
            )
            raise
        self.records.append(
            LMCallRecord.model_construct(
                node=request.node,
                model=request.model,
                request=request.canonical(),
                response=resp.text,
                prompt_tokens=resp.prompt_tokens,
                completion_tokens=resp.completion_tokens,
                cost_usd=resp.cost_usd,
                latency_s=resp.latency_s,
                cached=resp.cached,
                error=None,
                attempts=attempts,
            )
        )
        return resp
