"""Comparing two evaluations example by example (`flowc eval --compare A B`).

Examples are paired by id (only the ids both evaluated count; the others are listed). Per metric:
wins (B scored higher), losses, ties, the mean of the paired differences B − A, and a percentile
bootstrap confidence interval of that mean (resampling the pairs; seeded, so the same two runs
always give the same interval). A failed example scores 0, as in the report's `metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from flowc.errors import FlowcError
from flowc.runtime import evaldir


@dataclass(frozen=True)
class MetricComparison:
    metric: str
    n: int
    mean_a: float
    mean_b: float
    wins: int  # B better
    losses: int  # B worse
    ties: int
    diff: float  # mean of B - A
    ci_low: float
    ci_high: float
    confidence: float
    changed: list[tuple[str, float, float]] = field(default_factory=list)  # (id, a, b), largest |b-a| first

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.ci_low > 0 or self.ci_high < 0


@dataclass(frozen=True)
class Comparison:
    a: Path
    b: Path
    metrics: list[MetricComparison]
    only_a: list[str]
    only_b: list[str]
    meta_a: dict[str, Any]
    meta_b: dict[str, Any]


def bootstrap_ci(
    diffs: np.ndarray, *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `diffs`."""
    if len(diffs) == 0:
        return 0.0, 0.0
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diffs), size=(resamples, len(diffs)))
    means = diffs[idx].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of an evaluation folder (its checkpoint; works for an unfinished one too)."""
    rows = evaldir.read_rows(path)
    if not rows:
        raise FlowcError(
            "run-not-found",
            f"'{path}' holds no evaluation results",
            hint="pass the folder that 'flowc eval' named in its report line",
        )
    return rows


def compare(
    a: Path, b: Path, *, metrics: list[str] | None = None, confidence: float = 0.95, seed: int = 0, show: int = 5
) -> Comparison:
    rows_a = {str(r["id"]): r for r in load_rows(a)}
    rows_b = {str(r["id"]): r for r in load_rows(b)}
    common = [i for i in rows_a if i in rows_b]
    names_a = {m for r in rows_a.values() for m in r.get("scores", {})}
    names_b = {m for r in rows_b.values() for m in r.get("scores", {})}
    shared = sorted(names_a & names_b)
    wanted = metrics or shared
    missing = [m for m in wanted if m not in shared]
    if missing or not wanted:
        raise FlowcError(
            "unknown-metric",
            f"metric '{missing[0]}' is not scored in both evaluations" if missing else "no metric scored in both",
            hint=f"in A: {', '.join(sorted(names_a)) or 'none'}; in B: {', '.join(sorted(names_b)) or 'none'}",
        )
    out = []
    for m in wanted:
        sa = np.array([float(rows_a[i].get("scores", {}).get(m, 0.0)) for i in common])
        sb = np.array([float(rows_b[i].get("scores", {}).get(m, 0.0)) for i in common])
        d = sb - sa
        low, high = bootstrap_ci(d, confidence=confidence, seed=seed)
        order = sorted(range(len(common)), key=lambda k: -abs(d[k]))
        changed = [(common[k], float(sa[k]), float(sb[k])) for k in order[:show] if d[k] != 0]
        out.append(
            MetricComparison(
                metric=m,
                n=len(common),
                mean_a=float(sa.mean()) if len(common) else 0.0,
                mean_b=float(sb.mean()) if len(common) else 0.0,
                wins=int((d > 0).sum()),
                losses=int((d < 0).sum()),
                ties=int((d == 0).sum()),
                diff=float(d.mean()) if len(common) else 0.0,
                ci_low=low,
                ci_high=high,
                confidence=confidence,
                changed=changed,
            )
        )
    return Comparison(
        a,
        b,
        out,
        sorted(set(rows_a) - set(rows_b)),
        sorted(set(rows_b) - set(rows_a)),
        evaldir.read_json(a / evaldir.META),
        evaldir.read_json(b / evaldir.META),
    )
