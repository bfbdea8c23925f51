"""TEP's update operator U_v: rewrite one prompt from its critic's suggestions; in the nudged phase a
proximal edit, bounded by β (asked for as at most ⌈β·sentences⌉ changed sentences, checked as a
normalized token edit distance ≤ β)."""

from __future__ import annotations

import math
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from flowc.optimizers.tep.critic import prompt as _prompt
from flowc.optimizers.tep.edits import edit_ratio, sentences
from flowc.spec.template import placeholders

#: (who, system, user) -> the optimizer model's reply
Ask = Callable[[str, str, str], Awaitable[str]]


async def propose_edit(
    ask: Ask,
    *,
    param: str,
    role: str,
    prompt: str,
    free: Sequence[str],
    nudge: Sequence[str],
    beta: float | None,
) -> tuple[str | None, list[dict[str, Any]]]:
    """The rewrite of `prompt` (the param's current value), retried once when the reply has no
    prompt, changes the placeholders or (nudged: `beta` set) edits more than β. `free` are the
    free-phase suggestions the update keeps, `nudge` the nudged critic's. Returns the new prompt
    (None: no usable change) and every attempt's outcome."""
    nudged = beta is not None
    max_sent = math.ceil((beta or 0.0) * sentences(prompt)) if nudged else sentences(prompt)
    keep = sorted({ph.name for ph in placeholders(prompt)})
    free_block = "\nSuggestions from the local critic:\n" + "\n".join(f"- {s}" for s in free)
    nudge_block = (
        "\nSuggestions weighed by the pipeline's task objective (apply these with priority):\n"
        + "\n".join(f"- {s}" for s in nudge)
        if nudged
        else ""
    )
    system = _prompt("update_system", max_sentences=max_sent)
    user = _prompt(
        "update_user",
        role=role,
        prompt=prompt,
        free=free_block,
        nudged=nudge_block,
        max_sentences=max_sent,
        placeholders=", ".join("{{" + k + "}}" for k in keep) or "(none)",
    )
    attempts: list[dict[str, Any]] = []
    for _attempt in range(2):
        reply = await ask(f"tep:update:{param}", system, user)
        m = re.search(r"<PROMPT>(.*?)</PROMPT>", reply, re.S)
        new = m.group(1).strip("\n") if m else None
        if new is None or not new.strip():
            attempts.append({"rejected": "no prompt in the reply"})
            user += "\n\nYour reply had no <PROMPT>...</PROMPT>. Reply again with the whole new prompt in the tags."
            continue
        if {ph.name for ph in placeholders(new)} != set(keep):
            attempts.append({"rejected": "placeholders changed", "prompt": new})
            user += f"\n\nYour prompt changed the placeholders; keep exactly: {', '.join(keep) or '(none)'}."
            continue
        ratio = edit_ratio(prompt, new)
        if beta is not None and ratio > beta:
            attempts.append({"rejected": "edit above beta", "edit_ratio": ratio, "prompt": new})
            user += f"\n\nThat edit changed {ratio:.0%} of the prompt; the limit is {beta:.0%}. Make a smaller edit."
            continue
        attempts.append({"accepted": new != prompt, "edit_ratio": ratio})
        return (new if new != prompt else None), attempts
    return None, attempts
