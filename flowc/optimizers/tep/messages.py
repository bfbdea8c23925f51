"""What TEP's critics read: a node's own samples, the forward task message of the nudged phase, and
(reading B) the local contrast. None of them carries another node's feedback, so their size does
not grow with the pipeline's depth."""

from __future__ import annotations

import json

from flowc.compile import CompiledPipeline
from flowc.optimizers.scoring import Evaluation, Metric
from flowc.optimizers.tep.critic import prompt


def _dump(value: object, limit: int) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)[:limit]


def samples(forward: Evaluation, node: str) -> str:
    """The node's own inputs and outputs on each example of the minibatch (its last step per run)."""
    out = []
    for i, item in enumerate(forward.items, 1):
        step = next((s for s in reversed(item.run.steps) if s.node == node and s.status == "ok"), None)
        if step is None:
            continue
        out.append(f"<SAMPLE {i}>\ninput: {_dump(step.inputs, 600)}\noutput: {_dump(step.outputs, 400)}\n</SAMPLE {i}>")
    return "\n".join(out)


def task_message(
    current: CompiledPipeline, forward: Evaluation, metric: Metric, *, beta: float, max_failures: int
) -> str:
    """The forward signal (reading A): the pipeline's goal, its score on the minibatch, and a few
    failing examples, each with its input, the expected final answer and the pipeline's. Bounded
    (`max_failures` examples, each cut) whatever the depth."""
    fails = [s for s in forward.items if s.score < 1.0][:max_failures]
    names = list(current.spec.inputs)
    lines = [
        f"- input {_dump({k: s.example[k] for k in names if k in s.example}, 300)}: expected "
        f"{_dump(s.example.get(metric.target), 120)}, the pipeline answered "
        f"{_dump(s.run.outputs.get(metric.output), 120)}"
        for s in fails
    ]
    failures = ("Examples it got wrong:\n" + "\n".join(lines)) if lines else "It got every example right."
    goal = current.spec.description or f"the pipeline '{current.name}' answers correctly"
    return "\n" + prompt(
        "task_objective",
        goal=goal,
        metric=f"{metric.name} on '{metric.output}'",
        score=f"{forward.mean:.2f}",
        failures=failures,
        beta=f"{beta:.2f}",
    )


def contrast(forward: Evaluation, node: str, metric: Metric) -> str:
    """Reading B: the node's own output on a failed example next to the expected final answer."""
    for item in forward.items:
        if item.score >= 1.0:
            continue
        step = next((s for s in reversed(item.run.steps) if s.node == node and s.status == "ok"), None)
        if step is not None:
            mine = _dump(step.outputs, 200)
            gold = _dump(item.example.get(metric.target), 200)
            return (
                f"\n<CONTRAST>On a failed example this step produced {mine}; the pipeline should have "
                f"reached the final answer {gold}. Say what output of this step would have led there.</CONTRAST>"
            )
    return ""
