"""What the Ray executor's tests share: the spec, the examples and the echo model."""

from __future__ import annotations

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
