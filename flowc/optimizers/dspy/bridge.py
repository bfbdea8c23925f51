"""DSPy's LM calls through flowc's model client: a DSPy engine (`complete(Request) -> Response`, the
DSPy 3.4 custom-engine interface) that sends each request through the job's metered, journaled
`LMClient`, so DSPy's optimizers spend the job's budget and a resumed job replays their calls.

DSPy calls models synchronously, often from worker threads; flowc's clients are async. DSPy runs in a
worker thread and the engine submits each call to the job's event loop (where the clients' connections
and rate limiters live) and waits for it. The first error that is not a model
error (the budget running out, a kill) is kept and every later call refused at once, because DSPy
counts a failing call as a failed example and goes on: the optimizer then re-raises it.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from flowc.errors import LMError
from flowc.runtime.lm import LMClient, LMRequest, Message
from flowc.spec.models import ModelDecl


class Halted:
    """The first fatal error seen by any engine of one job (shared between them)."""

    def __init__(self) -> None:
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def record(self, e: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = e


def _text(parts: Any) -> str:
    if parts is None:
        return ""
    if isinstance(parts, str):
        return parts
    return "".join(getattr(p, "text", "") or "" for p in parts)


class FlowcEngine:
    """One model declaration of the spec (or the optimizer's model), answered by a flowc client."""

    def __init__(
        self, client: LMClient, loop: asyncio.AbstractEventLoop, decl: ModelDecl, halted: Halted, node: str | None
    ) -> None:
        self.client = client
        self.loop = loop
        self.decl = decl
        self.halted = halted
        self.node = node

    def __deepcopy__(self, memo: dict[int, Any]) -> FlowcEngine:
        return self  # DSPy copies programs with their LMs; the client and its event loop are shared

    def request(self, request: Any) -> LMRequest:
        msgs: list[Message] = []
        system = _text(request.system)
        if system:
            msgs.append(Message(role="system", content=system))
        for m in request.messages:
            role = m.role if m.role in ("user", "assistant", "system") else "user"
            msgs.append(Message(role=role, content=_text(m.parts)))
        cfg = request.config
        d = self.decl
        return LMRequest(
            model=d.id,
            messages=tuple(msgs),
            temperature=cfg.temperature if cfg.temperature is not None else d.temperature,
            max_tokens=cfg.max_tokens if cfg.max_tokens is not None else d.max_tokens,
            seed=cfg.seed if cfg.seed is not None else d.seed,
            stop=tuple(cfg.stop or ()),
            api_base=d.api_base,
            timeout_s=d.timeout,
            node=self.node,
        )

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message as DMessage
        from dspy.lm15 import Response, TextPart, Usage

        if self.halted.error is not None:
            raise _Refused(self.halted.error)
        try:
            future = asyncio.run_coroutine_threadsafe(self.client.complete(self.request(request)), self.loop)
            answer = future.result()
        except LMError:
            raise  # a model error: DSPy may count the example as failed and go on
        except BaseException as e:
            self.halted.record(e)
            raise _Refused(e) from e
        return Response(
            id=None,
            model=answer.model,
            message=DMessage.assistant([TextPart(answer.text)]),
            finish_reason="length" if answer.finish_reason == "length" else "stop",
            usage=Usage(input_tokens=answer.prompt_tokens, output_tokens=answer.completion_tokens),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass


class _Refused(RuntimeError):
    """What DSPy sees when the job has halted (its original error is re-raised by the optimizer)."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"flowc stopped the job: {cause}")


def dspy_lm(
    client: LMClient, loop: asyncio.AbstractEventLoop, decl: ModelDecl, halted: Halted, node: str | None = None
) -> Any:
    """A `dspy.LM` whose calls go through `client` (DSPy's cache and retries off: flowc owns both)."""
    import dspy

    engine = FlowcEngine(client, loop, decl, halted, node)
    return dspy.LM(f"flowc/{decl.id}", engine=engine, cache=False, num_retries=0)
