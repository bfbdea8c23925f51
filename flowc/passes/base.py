"""The pass contract.

A pass is a frozen dataclass with a kebab-case `name` ClassVar; its options are its fields. It
takes a FlowGraph and a PassContext and returns a FlowGraph — the same object when it only
analyses, a new one when it rewrites. Valid in, valid out: the pipeline verifies the IR after every
pass and names the pass that broke it. Findings go to `ctx.report(...)`; results other passes or
the CLI read (such as the cost estimate) go to `ctx.results[name]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from flowc.errors import Diagnostic, ErrorCode, Severity
from flowc.ir.graph import FlowGraph
from flowc.source import Span
from flowc.spec.models import Pipeline


@dataclass
class PassContext:
    spec: Pipeline
    diagnostics: list[Diagnostic] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)

    def report(
        self,
        code: ErrorCode,
        message: str,
        span: Span | None,
        hint: str | None = None,
        *,
        severity: Severity = "error",
        notes: tuple[str, ...] = (),
    ) -> None:
        self.diagnostics.append(Diagnostic(code, message, span, hint, severity, notes))

    @property
    def has_errors(self) -> bool:
        return any(d.severity == "error" for d in self.diagnostics)


@dataclass(frozen=True)
class Pass:
    """Base of every pass: subclasses set `name` and implement `run`."""

    name: ClassVar[str] = ""

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        raise NotImplementedError
