"""POQD's prompt optimizer request, OPRO-style (ALGORITHMS.md §3.4): the meta-prompt from the
(prefix, loss) history and the reading of the proposed prefix.

The meta-prompt (our wording, kept in prompts/meta.md) follows OPRO's `gen_meta_prompt`: the task
sentence with the fixed part of the decomposer prompt, the previous instructions with their scores
— here the downstream loss, lower is better, sorted from worst to best so the best sit next to the
request — at most `max_history` of them, a few training questions with their answers, and "write
an instruction different from all above with a better score, between <INS> and </INS>".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from functools import cache
from importlib.resources import files
from string import Template
from typing import Any

__all__ = ["EMPTY", "meta_prompt", "read_instruction"]

#: how the history shows the empty prefix (the decomposer prompt as the spec wrote it)
EMPTY = "(no instruction: the prompt above as it is)"

_INS = re.compile(r"<INS>(.*?)</INS>", re.DOTALL | re.IGNORECASE)
_OPEN = re.compile(r"<INS>", re.IGNORECASE)


@cache
def _template() -> Template:
    return Template(files("flowc.optimizers.poqd").joinpath("prompts", "meta.md").read_text(encoding="utf-8"))


def meta_prompt(
    template: str,
    history: Sequence[Sequence[Any]],
    exemplars: Sequence[Mapping[str, str]] = (),
    *,
    max_history: int = 20,
) -> str:
    """The optimizer LLM's request.

    Args:
        template: the fixed part of the decomposer prompt (the spec's prompt), shown after <INS>.
        history: (prefix, loss) pairs; the `max_history` lowest losses are shown, worst first.
        exemplars: a few training questions, `{"question": ..., "answer": ...}`.
        max_history: how many instructions to show at most.
    """
    best = sorted(history, key=lambda h: float(h[1]))[:max_history]
    shown = sorted(best, key=lambda h: -float(h[1]))
    lines = [f"text:\n<INS>{p or EMPTY}</INS>\nloss: {float(loss):.3f}\n" for p, loss in shown]
    ex = ""
    if exemplars:
        ex = "Some of the training questions, with the answers the reader should give:\n\n" + "".join(
            f"Q: {e['question']}\nA: {e['answer']}\n\n" for e in exemplars
        )
    return _template().substitute(template=template.strip(), history="\n".join(lines), exemplars=ex).strip()


def read_instruction(reply: str, *, max_chars: int = 600) -> str | None:
    """The proposed prefix in a reply: the last `<INS>...</INS>` (or what follows a lone `<INS>`),
    stripped; None when there is none, it is empty, it is the empty-prefix marker, or it holds a
    `{{placeholder}}` (a prefix must not change what the prompt reads)."""
    found = _INS.findall(reply)
    if found:
        text = found[-1]
    else:
        opened = list(_OPEN.finditer(reply))
        if not opened:
            return None
        text = reply[opened[-1].end() :]
    text = text.strip().strip('"').strip()
    if not text or text == EMPTY or "{{" in text or "{%" in text:
        return None
    return text[:max_chars].strip()
