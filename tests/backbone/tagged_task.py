"""The demonstration task: answer from a passage in the exact form `<answer>…</answer>`."""

from __future__ import annotations

import json
import re
from pathlib import Path

DATA = Path(__file__).with_name("fixtures") / "tagged_qa.jsonl"

SYSTEM = (
    "Answer the question using only the passage. Reply with the answer inside <answer></answer> tags and nothing else."
)
_FORMAT = re.compile(r"\s*<answer>(.*?)</answer>\s*", re.S)


def load(split: str) -> list[dict[str, str]]:
    """Rows of one split ("train" or "test")."""
    rows = [json.loads(line) for line in DATA.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["split"] == split]


def messages(row: dict[str, str]) -> list[dict[str, str]]:
    """The chat prompt for a row."""
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Passage: {row['passage']}\nQuestion: {row['question']}"},
    ]


def target(row: dict[str, str]) -> str:
    """The reply the model should give."""
    return f"<answer>{row['answer']}</answer>"


def score(reply: str, answer: str) -> tuple[bool, bool]:
    """(format-valid, correct): valid means the whole reply is one tagged answer; correct means the
    tagged text equals the answer, ignoring case and surrounding spaces/periods."""
    m = _FORMAT.fullmatch(reply)
    if m is None:
        return False, False
    return True, m.group(1).strip().strip(".").lower() == answer.lower()
