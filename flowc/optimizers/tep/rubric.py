"""Rubrics for TEP's local critics: task-independent dimensions plus a node's task criteria.

The paper names neither list; these defaults follow the dimensions one summary reports
(ALGORITHMS.md §2.5: treat as a reasonable default, not as the paper's). A node adds its own
task-dependent criteria with `criteria: [...]` in the spec; otherwise one is derived from its role.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Criterion:
    id: str
    description: str
    task_dependent: bool = False


TASK_INDEPENDENT = (
    Criterion("clarity", "the prompt states what to do plainly and in a sensible order"),
    Criterion("completeness", "the prompt says everything the step needs: inputs, output, constraints"),
    Criterion("consistency", "the prompt does not contradict itself or its inputs"),
    Criterion("context_use", "the output uses the information the step was given"),
    Criterion("reasoning", "the output's reasoning, if any, is visible and sound"),
    Criterion("format", "the output follows the format the pipeline expects"),
)


def rubric_for(role: str, criteria: list[str]) -> tuple[Criterion, ...]:
    task = [Criterion(f"task_{i + 1}", c, True) for i, c in enumerate(criteria)]
    if not task:
        what = role or "this step"
        task = [Criterion("task_1", f"the output does its job as {what} well enough for the final answer", True)]
    return (*TASK_INDEPENDENT, *task)


def render(rubric: tuple[Criterion, ...]) -> str:
    return "\n".join(f"- {c.id}: {c.description}" for c in rubric)
