"""Bounding modification intensity: normalized token-level edit distance, and sentences."""

from __future__ import annotations

import re


def tokens(text: str) -> list[str]:
    return re.findall(r"\w+|[^\w\s]", text)


def edit_ratio(a: str, b: str) -> float:
    """Levenshtein distance between the token sequences of a and b, over the longer length (0..1)."""
    x, y = tokens(a), tokens(b)
    if not x and not y:
        return 0.0
    prev = list(range(len(y) + 1))
    for i, tx in enumerate(x, 1):
        cur = [i] + [0] * len(y)
        for j, ty in enumerate(y, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (tx != ty))
        prev = cur
    return prev[-1] / max(len(x), len(y))


def sentences(text: str) -> int:
    return max(1, len([s for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]))
