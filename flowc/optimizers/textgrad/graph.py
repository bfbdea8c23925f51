"""The computation graph TextGrad differentiates, rebuilt from the traces of a minibatch.

Variables are the trainable params (shared by every run that used them) and the output of every
step of every run. A step's predecessors are its node's trainable params and the outputs of the
upstream steps it read (the latest step of each source node that finished before it). No LM here:
this module only decides who gets feedback from whom, in which order (micrograd's topo sort).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from flowc.compile import CompiledPipeline
from flowc.ir.graph import INPUT, OUTPUT
from flowc.runtime.trace import RunResult, StepRecord

#: "No change needed." and its variants: feedback that asks for nothing (the backward system prompt
#: asks for exactly that sentence when the objective is met)
_NO_CHANGE = re.compile(
    r"^\W*(no (further |more )?(changes?|edits?|modifications?|improvements?)( (is|are))? "
    r"(needed|required|necessary)|nothing to (change|improve))\b",
    re.IGNORECASE,
)


def asks_for_change(text: str) -> bool:
    """Whether a piece of feedback asks for anything: not blank, and not a short "No change needed."."""
    t = text.strip()
    return bool(t) and not (_NO_CHANGE.match(t) and len(t.split()) <= 12)


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
    #: how each predecessor reached this step: "param", "data", "history" or "route"
    links: dict[str, str] = field(default_factory=dict)
    gradients: list[Gradient] = field(default_factory=list)

    def gradient_text(self) -> str:
        """The feedback on this variable, whitespace-only and "No change needed." pieces dropped and
        duplicates merged (TextGrad's release counts "\\n" from two empty sum gradients as feedback:
        quirk Q1; a variable whose feedback asks for nothing gets no backward or update call)."""
        seen: list[str] = []
        for g in self.gradients:
            t = g.text.strip()
            if asks_for_change(t) and t not in seen:
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
        steps_of: dict[str, list[str]] = {}  # node -> its step variables so far, in order
        for step in sorted(run.steps, key=lambda s: s.seq):
            if step.status != "ok":
                continue
            vid = f"ex{example}/step{step.seq}"
            links: dict[str, str] = {}
            if step.kind == "llm":
                for kind in ("prompt", "system"):
                    pid = f"param:{step.node}.{kind}"
                    if pid in self.vars:
                        links[pid] = "param"
            # values first, then histories, then routes: a router that also sent a value is a data link
            for kind in ("data", "history", "route"):
                for e in g.in_edges(step.node):
                    if e.kind != kind or e.src == INPUT or e.src not in steps_of:
                        continue
                    sources = steps_of[e.src] if kind == "history" else steps_of[e.src][-1:]
                    for source in sources:
                        links.setdefault(source, kind)
            preds = list(links)
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
                links,
            )
            self.order.append(vid)
            steps_of.setdefault(step.node, []).append(vid)
        src = next((e.src for e in g.in_edges(OUTPUT) if e.dst_port == output and e.src in steps_of), None)
        if src is None:
            return None
        self.terminals[example] = steps_of[src][-1]
        return steps_of[src][-1]

    def backward_order(self, example: int) -> list[Var]:
        """The step variables of one run, last first (reverse topological order)."""
        return [self.vars[v] for v in reversed(self.order) if self.vars[v].example == example]

    def params(self) -> list[Var]:
        return [v for v in self.vars.values() if v.kind == "param"]
