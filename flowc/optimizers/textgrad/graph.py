"""The computation graph TextGrad differentiates, rebuilt from the traces of a minibatch.

Variables are the trainable params (shared by every run that used them) and the output of every
step of every run. A step's predecessors are its node's trainable params and the outputs of the
upstream steps it read (the latest step of each source node that finished before it). No LM here:
this module only decides who gets feedback from whom, in which order (micrograd's topo sort).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.ir.graph import INPUT, OUTPUT
from flowc.runtime.trace import RunResult, StepRecord


@dataclass
class Gradient:
    """One piece of textual feedback on a variable, with where it came from."""

    text: str
    conversation: str  # the call the variable was used in, as the backward engine saw it
    output_role: str  # what that call's output was used as
    source: str  # provenance: "ex2/step5 <- ex2/step7"


@dataclass
class Var:
    id: str
    role: str
    value: str
    requires_grad: bool
    kind: str  # param | llm | function
    node: str | None = None
    step: StepRecord | None = None
    example: int | None = None
    preds: list[str] = field(default_factory=list)
    gradients: list[Gradient] = field(default_factory=list)

    def gradient_text(self) -> str:
        """The feedback on this variable, whitespace-only pieces dropped and duplicates merged
        (TextGrad's release counts "\\n" from two empty sum gradients as feedback: quirk Q1)."""
        seen: list[str] = []
        for g in self.gradients:
            t = g.text.strip()
            if t and t not in seen:
                seen.append(t)
        return "\n".join(seen)


def param_role(compiled: CompiledPipeline, name: str) -> str:
    p = compiled.params[name]
    node = compiled.spec.nodes.get(p.node or "")
    what = {"prompt": "prompt template", "system": "system prompt", "demos": "demonstrations"}.get(p.kind, p.kind)
    role = f" ({p.role})" if p.role else ""
    desc = f": {node.description}" if node is not None and node.description else ""
    return f"the {what} of the '{p.node}' step{role} of a language-model pipeline{desc}"


def step_role(compiled: CompiledPipeline, step: StepRecord) -> str:
    node = compiled.graph.node(step.node)
    role = f" ({node.role})" if node.role else ""
    return f"the output of the '{step.node}' step{role}"


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)


class GradGraph:
    """Variables of one minibatch: shared params plus per-run step outputs."""

    def __init__(self, compiled: CompiledPipeline, params: list[str]) -> None:
        self.compiled = compiled
        self.vars: dict[str, Var] = {}
        self.order: list[str] = []  # forward (topological) order of step variables
        for name in params:
            self.vars[f"param:{name}"] = Var(
                f"param:{name}",
                param_role(compiled, name),
                _text(compiled.params[name].value),
                True,
                "param",
                node=compiled.params[name].node,
            )
        self.terminals: dict[int, str] = {}

    def add_run(self, example: int, run: RunResult, output: str) -> str | None:
        """Add the steps of one run; returns the variable holding the scored output (if any)."""
        g = self.compiled.graph
        last: dict[str, str] = {}
        for step in sorted(run.steps, key=lambda s: s.seq):
            if step.status != "ok":
                continue
            vid = f"ex{example}/step{step.seq}"
            preds: list[str] = []
            for e in g.in_edges(step.node):
                if e.kind != "route" and e.src != INPUT and e.src in last and last[e.src] not in preds:
                    preds.append(last[e.src])
            if step.kind == "llm":
                for kind in ("system", "prompt"):
                    pid = f"param:{step.node}.{kind}"
                    if pid in self.vars:
                        preds.insert(0, pid)
            requires = any(self.vars[p].requires_grad for p in preds)
            self.vars[vid] = Var(
                vid,
                step_role(self.compiled, step),
                _text(step.outputs),
                requires,
                "llm" if step.lm_calls else "function",
                step.node,
                step,
                example,
                preds,
            )
            self.order.append(vid)
            last[step.node] = vid
        src = next((e.src for e in g.in_edges(OUTPUT) if e.dst_port == output and e.src in last), None)
        if src is None:
            return None
        self.terminals[example] = last[src]
        return last[src]

    def backward_order(self, example: int) -> list[Var]:
        """The step variables of one run, last first (reverse topological order)."""
        return [self.vars[v] for v in reversed(self.order) if self.vars[v].example == example]

    def params(self) -> list[Var]:
        return [v for v in self.vars.values() if v.kind == "param"]
