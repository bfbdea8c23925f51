"""Shared by the CLI tests of run/eval/test: a scripted model per command and FLOWC_HOME in tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flowc.cli.main import main
from flowc.errors import LMError
from flowc.runtime.lm import LMRequest, LMResponse

SPEC = """
pipeline qa {
  input question: str
  output answer: str <- answer.answer
  model m = "openai/fake"
  node answer: llm {
    prompt: "Q: {{question}}"
    question <- question
    output answer: str
  }
  metric em: exact_match(output = answer, target = answer)
}
"""


class RuleLM:
    """Answers 'Q: <text>' with `<text>` upper-cased; a question containing 'fail' gets an
    lm-auth error (what a missing API key gives); `judge` answers the llm_judge requests."""

    def __init__(self, judge: Callable[[LMRequest], str] | None = None) -> None:
        self.calls: list[LMRequest] = []
        self.judge = judge

    async def complete(self, req: LMRequest) -> LMResponse:
        self.calls.append(req)
        text = req.messages[-1].content
        if req.node and req.node.startswith("llm_judge:"):
            assert self.judge is not None
            return LMResponse(text=self.judge(req), model=req.model, prompt_tokens=20, completion_tokens=3)
        if "fail" in text:
            raise LMError("lm-auth", "no API key for openai/fake", node=req.node, model=req.model)
        return LMResponse(
            text=text.removeprefix("Q: ").upper(), model=req.model, prompt_tokens=2, completion_tokens=1, cost_usd=0.001
        )


class Clients:
    """Stands in for `session.default_client`: one RuleLM per command, all kept."""

    def __init__(self, judge: Callable[[LMRequest], str] | None = None) -> None:
        self.made: list[RuleLM] = []
        self.compiled: list[Any] = []
        self.judge = judge

    def __call__(self, compiled: Any, **_: Any) -> RuleLM:
        lm = RuleLM(self.judge)
        self.made.append(lm)
        self.compiled.append(compiled)
        return lm

    @property
    def calls(self) -> list[LMRequest]:
        return [c for lm in self.made for c in lm.calls]


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_data(path: Path, rows: list[dict[str, Any]]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
