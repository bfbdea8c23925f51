"""What the Ray executor's tests share: the spec, the examples, the echo model, and finding the
processes of a Ray instance by its temp dir."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from flowc.testing.fake_server import Reply

SPEC = """
pipeline qa {{
  input question: str
  output answer: str <- answer.answer
  model m = "openai/fake" {{ api_base: "{base}"{limits} }}
  node answer: llm {{
    prompt: "Q: {{{{question}}}}"
    question <- question
    output answer: str
  }}
  metric em: exact_match(output = answer, target = answer)
}}
"""


def spec_text(base_url: str, *, rpm: int | None = None) -> str:
    return SPEC.format(base=base_url, limits=f"\n    rpm: {rpm}\n" if rpm else "")


def records(n: int, *, failing: tuple[int, ...] = ()) -> list[dict[str, Any]]:
    """Examples whose right answer is the echo of their prompt; some are wrong on purpose (every
    third), and those in `failing` make the server answer 400 (a failed example)."""
    out = []
    for i in range(n):
        q = f"fail {i}" if i in failing else f"question {i}"
        answer = f"Q: {q}".upper() if i % 3 else "something else"
        out.append({"id": f"ex{i:03d}", "question": q, "answer": answer})
    return out


def echo(latency_s: float) -> Any:
    def reply(body: dict[str, Any]) -> Reply:
        text = str(body["messages"][-1]["content"])
        if "fail" in text:
            return Reply(status=400)
        return Reply(text=text.upper(), latency_s=latency_s)

    return reply


def processes_of(temp: str) -> list[int]:
    """The processes whose command line names the instance's temp dir (raylet, GCS, workers)."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes()
            status = (d / "status").read_text()
        except OSError:
            continue
        if temp.encode() in cmd and "State:\tZ" not in status:
            found.append(int(d.name))
    return found


def wait_gone(temp: str, timeout_s: float) -> list[int]:
    deadline = time.monotonic() + timeout_s
    while True:
        left = processes_of(temp)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
