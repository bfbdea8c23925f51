"""POQD's downstream loss (ALGORITHMS.md §3.2), in numpy: what the prompt search compares.

    L(Θ; p) = mean over training questions Q of  −log Σ_{D ∈ D_K(Q)} P_Θ(a | Q, D) · P(D | Q)

D_K(Q) are the top-K documents by averaged MaxSim over the (filtered) sub-queries that prompt p
makes the decomposer write for Q; P(D | Q) is the softmax of their MaxSim scores over D_K (divided
by a temperature, 1 by default); P_Θ(a | Q, D) is the generator's probability of the gold answer
given Q and D alone. The same quantity, differentiable, is the generator's training loss
(`generator.py`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["log_prior", "question_loss", "sufficient_decrease"]


def log_prior(scores: Sequence[float], temperature: float = 1.0) -> np.ndarray:
    """log P(D | Q) over the retrieved documents: log-softmax of their scores / temperature."""
    s = np.asarray(scores, dtype=np.float64) / temperature
    return s - (s.max() + np.log(np.exp(s - s.max()).sum()))


def question_loss(answer_logprobs: Sequence[float], scores: Sequence[float], temperature: float = 1.0) -> float:
    """−log Σ_D P(a | Q, D) · P(D | Q) for one question.

    Args:
        answer_logprobs: log P(a | Q, D) for each retrieved document D.
        scores: the documents' MaxSim scores (same order).
        temperature: of the softmax that turns scores into P(D | Q).
    """
    joint = np.asarray(answer_logprobs, dtype=np.float64) + log_prior(scores, temperature)
    top = joint.max()
    return float(-(top + np.log(np.exp(joint - top).sum())))


def sufficient_decrease(old: float, new: float, alpha: float) -> bool:
    """ALG1's acceptance test: the new prompt lowers the loss by at least α.

    The paper's notes print it as `L(p) − L(p_old) ≤ α`; its theorem and α ablation (α = 0.05:
    "hard to find a prompt meeting the condition") only make sense as a required *decrease*
    (ALGORITHMS.md §3.3), which is what this tests.
    """
    return old - new >= alpha - 1e-12  # a decrease of exactly α passes despite rounding
