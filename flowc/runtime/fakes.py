"""Test doubles for `LMClient`, shipped in the package so users' tests can use them too.

- `ScriptedLM`: answers from a list in order and raises when the list runs out (a fake that
  wraps around or invents an answer hides bugs);
- `ReplayLM`: answers recorded traffic keyed by `LMRequest.key()`; a miss shows the request and
  the nearest recorded one;
- `RecordingLM`: wraps a real client and appends `{key, request, response}` JSON lines that
  `ReplayLM.from_file` reads back;
- `EchoLM`: answers with the prompt, to assert how prompts are built.

Token counts are approximated deterministically (whitespace-separated words), so budgets and
traces behave the same on every run.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime.lm import LMClient, LMRequest, LMResponse

ScriptItem = str | Exception | Callable[[LMRequest], str]


def count_tokens(text: str) -> int:
    """The deterministic token estimate the fakes report: one token per whitespace-separated word."""
    return len(text.split())


def _response(request: LMRequest, text: str, model: str | None = None) -> LMResponse:
    return LMResponse(
        text=text,
        model=model or request.model,
        prompt_tokens=sum(count_tokens(m.content) for m in request.messages),
        completion_tokens=count_tokens(text),
        finish_reason="stop",
    )


def _last_user(request: LMRequest) -> str:
    for m in reversed(request.messages):
        if m.role == "user":
            return m.content
    return request.prompt_text


class ScriptedLM:
    """Answers requests from a script, in order; records every request in `.calls`.

    Each script item is the answer text, an exception to raise (e.g. an `LMTimeout` to test
    retries), or a function of the request returning the text.

    Raises:
        FlowcError: (lm-script-exhausted) when asked once more than the script has answers.
    """

    def __init__(self, responses: Iterable[ScriptItem], *, model: str | None = None) -> None:
        self.responses: list[ScriptItem] = list(responses)
        self.model = model
        self.calls: list[LMRequest] = []

    @property
    def remaining(self) -> int:
        """How many scripted answers are left."""
        return len(self.responses) - len(self.calls)

    async def complete(self, request: LMRequest) -> LMResponse:
        """The next scripted answer (or exception) for `request`."""
        index = len(self.calls)
        self.calls.append(request)
        if index >= len(self.responses):
            raise FlowcError(
                "lm-script-exhausted",
                f"ScriptedLM was asked for answer #{index + 1} but its script has only "
                f"{len(self.responses)}; the extra request's last user message: "
                f"{_last_user(request)[:200]!r}",
                hint="add answers to the script, or check why the pipeline made more model calls than the test expects",
            )
        item = self.responses[index]
        if isinstance(item, Exception):
            raise item
        text = item if isinstance(item, str) else item(request)
        return _response(request, text, self.model)


class EchoLM:
    """Answers every request with its prompt (all messages joined by newlines).

    Args:
        last_user_only: answer with the last user message only.
    """

    def __init__(self, *, last_user_only: bool = False) -> None:
        self.last_user_only = last_user_only
        self.calls: list[LMRequest] = []

    async def complete(self, request: LMRequest) -> LMResponse:
        """Echo the request's prompt."""
        self.calls.append(request)
        return _response(request, _last_user(request) if self.last_user_only else request.prompt_text)


class ReplayLM:
    """Answers from recorded traffic: `{key: response}`, keyed by `LMRequest.key()`.

    Records are what `RecordingLM` writes: dicts with `key`, `request` (the canonical request)
    and `response` (an `LMResponse` dump, or just its text). Replayed responses keep their
    recorded tokens and report latency 0.

    Raises:
        FlowcError: (lm-replay-miss) on a request that was never recorded, showing its last user
            message and the most similar recorded request.
    """

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        self._by_key: dict[str, LMResponse] = {}
        self._requests: dict[str, Mapping[str, Any]] = {}
        for rec in records:
            key = str(rec["key"])
            resp = rec["response"]
            if isinstance(resp, str):
                resp = {"text": resp, "model": (rec.get("request") or {}).get("model", "replay")}
            self._by_key[key] = LMResponse.model_validate({**resp, "latency_s": 0.0, "cached": False})
            self._requests[key] = rec.get("request") or {}
        self.calls: list[LMRequest] = []

    @classmethod
    def from_file(cls, path: str | Path) -> ReplayLM:
        """Load JSON lines written by `RecordingLM` (a JSON list of records works too)."""
        p = Path(path)
        if not p.exists():
            raise FlowcError(
                "file-not-found", f"no replay file at {p}", hint="record one first with RecordingLM(inner_client, path)"
            )
        text = p.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            return cls(json.loads(text))
        return cls(json.loads(line) for line in text.splitlines() if line.strip())

    def __len__(self) -> int:
        return len(self._by_key)

    async def complete(self, request: LMRequest) -> LMResponse:
        """The recorded answer to `request`."""
        self.calls.append(request)
        key = request.key()
        hit = self._by_key.get(key)
        if hit is not None:
            return hit
        raise FlowcError(
            "lm-replay-miss",
            self._miss_message(request, key),
            hint="re-record the fixture with RecordingLM, or check what changed in the "
            "prompt (template, demos, inputs) or the model settings",
        )

    def _miss_message(self, request: LMRequest, key: str) -> str:
        asked = _last_user(request)
        msg = (
            f"no recorded response for request {key[:12]}… (model {request.model}); last user message: {asked[:300]!r}"
        )
        if not self._requests:
            return msg + "; the replay file is empty"
        target = json.dumps(request.canonical(), sort_keys=True)
        best_key, best_ratio = "", -1.0
        for k, req in self._requests.items():
            ratio = difflib.SequenceMatcher(None, target, json.dumps(req, sort_keys=True), autojunk=False).ratio()
            if ratio > best_ratio:
                best_key, best_ratio = k, ratio
        nearest = self._requests[best_key]
        messages = nearest.get("messages") or []
        nearest_user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        diffs = [
            f
            for f in ("model", "temperature", "max_tokens", "seed", "stop", "extra")
            if nearest.get(f) != request.canonical().get(f)
        ]
        differs = f"; it differs in: {', '.join(diffs)}" if diffs else ""
        return (
            f"{msg}; nearest recorded request {best_key[:12]}… ({best_ratio:.0%} similar{differs}) "
            f"asked: {str(nearest_user)[:300]!r}"
        )


class RecordingLM:
    """Passes requests to `inner` and appends each exchange to a JSON-lines file for `ReplayLM`.

    Each line is `{"key", "request", "response"}`; the request is the canonical form, which
    holds no credentials (keys live in the environment, never in requests).
    """

    def __init__(self, inner: LMClient, path: str | Path) -> None:
        self.inner = inner
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = asyncio.Lock()

    async def complete(self, request: LMRequest) -> LMResponse:
        """Call `inner`, record the exchange, return the response."""
        response = await self.inner.complete(request)
        record = {
            "key": request.key(),
            "request": request.canonical(),
            "response": response.model_dump(exclude={"latency_s", "cached"}),
        }
        line = json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n"
        async with self._lock:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(line)
        return response


def scripted(*responses: ScriptItem) -> ScriptedLM:
    """Shorthand: `scripted("a", "b")` == `ScriptedLM(["a", "b"])`."""
    return ScriptedLM(list(responses))


__all__: Sequence[str] = ("EchoLM", "RecordingLM", "ReplayLM", "ScriptedLM", "count_tokens", "scripted")
