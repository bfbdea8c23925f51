"""Every error flowc reports: a stable code, a message, a place in the source and a hint.

Codes are kebab-case and each one is documented under a heading of the same name in
docs/errors.md; tests/test_error_docs.py keeps the two lists equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal, get_args

from flowc.source import SourceFile, Span, render_excerpt

ErrorCode = Literal[
    # -- reading a spec -------------------------------------------------------------------
    "file-not-found",
    "input-too-large",
    "nesting-too-deep",
    "syntax-error",
    "unexpected-eof",
    "unexpected-character",
    "unterminated-string",
    "yaml-syntax",
    "yaml-not-mapping",
    # -- the shape of a spec (pydantic validation) ----------------------------------------
    "unknown-field",
    "missing-field",
    "invalid-value",
    "invalid-type-expr",
    "invalid-binding",
    "duplicate-name",
    "reserved-name",
    "name-conflict",
    # -- names ------------------------------------------------------------------------------
    "unknown-node",
    "unknown-port",
    "unknown-name",
    "unknown-input-port",
    "unknown-model",
    "unknown-corpus",
    "unknown-type",
    "unknown-metric",
    "unknown-tool",
    "import-not-found",
    "import-cycle",
    # -- types ------------------------------------------------------------------------------
    "edge-type-mismatch",
    "output-type-mismatch",
    "condition-type-mismatch",
    "map-over-non-list",
    # -- prompt templates -------------------------------------------------------------------
    "template-syntax",
    "template-unbound-var",
    "template-unused-input",
    # -- the shape of the graph -------------------------------------------------------------
    "missing-input",
    "unused-pipeline-input",
    "unreachable-node",
    "dead-end-node",
    "unbounded-cycle",
    "invalid-loop",
    "route-unknown-target",
    "route-fallback-not-a-choice",
    "route-without-fallback",
    "duplicate-route",
    "no-outputs",
    "retrieve-method-mismatch",
    "test-unknown-name",
    "demo-unknown-field",
    "ir-verify-failed",
    # -- passes and plugins -----------------------------------------------------------------
    "unknown-pass",
    "invalid-pass-option",
    "duplicate-plugin",
    # -- running ----------------------------------------------------------------------------
    "missing-pipeline-input",
    "input-type-error",
    "lm-timeout",
    "lm-rate-limited",
    "lm-server-error",
    "lm-connection",
    "lm-auth",
    "lm-bad-request",
    "lm-bad-response",
    "context-window-exceeded",
    "lm-script-exhausted",
    "lm-replay-miss",
    "output-parse-error",
    "route-invalid-choice",
    "loop-exhausted",
    "tool-not-registered",
    "tool-failed",
    "corpus-not-found",
    "corpus-invalid",
    "model-file-not-found",
    "model-checksum-mismatch",
    "dataset-invalid",
    "invalid-encoding",
    "run-not-found",
    "run-locked",
    "artifact-invalid",
    "budget-exceeded",
    "node-failed",
    "fmt-would-drop-comments",
    # -- interop: converting from and to other tools (docs/interop.md) ------------------------
    "import-unsupported",
    "import-dropped",
    "template-jinja",
    "export-unsupported",
]

ERROR_CODES: tuple[str, ...] = get_args(ErrorCode)

Severity = Literal["error", "warning", "note"]

DOCS = "docs/errors.md"


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a spec: a code, a message, where, and how to fix it."""

    code: ErrorCode
    message: str
    span: Span | None = None
    hint: str | None = None
    severity: Severity = "error"
    notes: tuple[str, ...] = ()

    def render(self, source: SourceFile | None = None) -> str:
        """`file:line:col: error[code]: message`, the line with a caret, notes and a hint."""
        where = f"{self.span}: " if self.span else ""
        out = [f"{where}{self.severity}[{self.code}]: {self.message}"]
        if self.span is not None and source is not None:
            excerpt = render_excerpt(source, self.span)
            if excerpt:
                out.append(excerpt)
        pad = "  "
        out.extend(f"{pad}{n}" for n in self.notes)
        hint = f"hint: {self.hint}   " if self.hint else ""
        out.append(f"{pad}{hint}docs: {DOCS}#{self.code}")
        return "\n".join(out)


class FlowcError(Exception):
    """The base of every error flowc raises on purpose. It carries one or more diagnostics."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        span: Span | None = None,
        hint: str | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.diagnostic = Diagnostic(code, message, span, hint, "error", tuple(notes))

    @property
    def code(self) -> ErrorCode:
        return self.diagnostic.code

    @property
    def hint(self) -> str | None:
        return self.diagnostic.hint

    def __str__(self) -> str:
        d = self.diagnostic
        where = f"{d.span}: " if d.span else ""
        hint = f" (hint: {d.hint})" if d.hint else ""
        return f"{where}error[{d.code}]: {d.message}{hint}"


@dataclass
class SpecErrors(Exception):
    """All the errors found in a spec in one run (warnings ride along)."""

    diagnostics: list[Diagnostic]
    sources: dict[str, SourceFile] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__init__(self.render())

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def codes(self) -> list[str]:
        return [d.code for d in self.errors]

    def render(self) -> str:
        return render_all(self.diagnostics, self.sources)

    def __str__(self) -> str:
        return self.render()


def render_all(diagnostics: Iterable[Diagnostic], sources: dict[str, SourceFile]) -> str:
    """Render diagnostics in source order, each with its excerpt."""

    def key(d: Diagnostic) -> tuple[str, int, int]:
        s = d.span
        return (s.path, s.line, s.column) if s else ("", 0, 0)

    parts = [d.render(sources.get(d.span.path) if d.span else None) for d in sorted(diagnostics, key=key)]
    return "\n\n".join(parts)


# -- runtime errors: typed, each naming the place (node, model) and the fix ------------------


class RuntimeFlowError(FlowcError):
    """An error while running a compiled pipeline."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        node: str | None = None,
        model: str | None = None,
        hint: str | None = None,
        span: Span | None = None,
    ) -> None:
        where = ", ".join(x for x in (f"node '{node}'" if node else "", f"model '{model}'" if model else "") if x)
        super().__init__(code, f"{where}: {message}" if where else message, span=span, hint=hint)
        self.node = node
        self.model = model


class LMError(RuntimeFlowError):
    """A model call failed; `retryable` says whether trying again may help."""

    retryable: bool = False


class LMTimeout(LMError):
    retryable = True


class LMRateLimited(LMError):
    retryable = True


class LMServerError(LMError):
    retryable = True


class LMConnectionError(LMError):
    retryable = True


class OutputParseError(RuntimeFlowError):
    """A model's output could not be parsed into the node's typed outputs, even after a repair."""
