"""`flowc check --format json|sarif`: the same findings as the text output, for scripts, editors
and CI annotations.

- json: `{"files": [{"path", "ok", "errors", "warnings", "diagnostics": [...]}], "errors", "warnings"}`,
  each diagnostic with its code, severity, message, hint, notes, docs link and 1-based span;
- sarif: SARIF 2.1.0 (what GitHub code scanning and most editors read): one run of the tool
  `flowc`, a rule per code, a result per diagnostic with its region.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import flowc
from flowc.errors import DOCS, Diagnostic, FlowcError, SpecErrors
from flowc.version import __version__

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"


def check_files(paths: Sequence[str]) -> list[tuple[str, list[Diagnostic]]]:
    """Every spec's diagnostics (errors and warnings), compiled as `flowc check` does."""
    out = []
    for path in paths:
        try:
            diags = list(flowc.compile(path).diagnostics)
        except SpecErrors as e:
            diags = list(e.diagnostics)
        except FlowcError as e:  # e.g. file-not-found: a finding about this path, without a span
            diags = [e.diagnostic]
        out.append((path, diags))
    return out


def diagnostic_json(d: Diagnostic) -> dict[str, Any]:
    span = d.span
    return {
        "code": d.code,
        "severity": d.severity,
        "message": d.message,
        "hint": d.hint,
        "notes": list(d.notes),
        "docs": f"{DOCS}#{d.code}",
        "path": span.path if span else None,
        "line": span.line if span else None,
        "column": span.column if span else None,
        "end_line": span.end_line if span else None,
        "end_column": span.end_column if span else None,
    }


def as_json(results: list[tuple[str, list[Diagnostic]]], werror: bool) -> dict[str, Any]:
    files = []
    for path, diags in results:
        errors = sum(_is_error(d, werror) for d in diags)
        files.append(
            {
                "path": path,
                "ok": errors == 0,
                "errors": errors,
                "warnings": sum(d.severity == "warning" for d in diags),
                "diagnostics": [diagnostic_json(d) for d in _ordered(diags)],
            }
        )
    return {
        "files": files,
        "errors": sum(f["errors"] for f in files),
        "warnings": sum(f["warnings"] for f in files),
    }


def as_sarif(results: list[tuple[str, list[Diagnostic]]], werror: bool) -> dict[str, Any]:
    codes = sorted({d.code for _, diags in results for d in diags})
    # SARIF wants helpUri absolute: given only when the docs link is a URL.
    rules = [
        {"id": c, "name": c, "shortDescription": {"text": c}, "help": {"text": f"see {DOCS}#{c}"}}
        | ({"helpUri": f"{DOCS}#{c}"} if DOCS.startswith(("http://", "https://")) else {})
        for c in codes
    ]
    index = {c: i for i, c in enumerate(codes)}
    out = []
    for path, diags in results:
        for d in _ordered(diags):
            text = d.message + (f" (hint: {d.hint})" if d.hint else "")
            if d.notes:
                text += "\n" + "\n".join(d.notes)
            region: dict[str, int] = {}
            uri = path
            if d.span is not None:
                uri = d.span.path
                region = {"startLine": d.span.line, "startColumn": d.span.column}
                if d.span.end_line is not None:
                    region["endLine"] = d.span.end_line
                if d.span.end_column is not None:
                    region["endColumn"] = d.span.end_column
            location: dict[str, Any] = {"artifactLocation": {"uri": Path(uri).as_posix()}}
            if region:
                location["region"] = region
            out.append(
                {
                    "ruleId": d.code,
                    "ruleIndex": index[d.code],
                    "level": "error" if _is_error(d, werror) else "warning" if d.severity == "warning" else "note",
                    "message": {"text": text},
                    "locations": [{"physicalLocation": location}],
                }
            )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": "flowc", "version": __version__, "rules": rules}},
                "results": out,
            }
        ],
    }


def render(paths: Sequence[str], fmt: str, werror: bool) -> tuple[str, int]:
    """The report in `fmt` (json or sarif) and the number of errors (warnings too with werror)."""
    results = check_files(paths)
    errors = sum(_is_error(d, werror) for _, diags in results for d in diags)
    data = as_sarif(results, werror) if fmt == "sarif" else as_json(results, werror)
    return json.dumps(data, indent=2, ensure_ascii=False), errors


def _is_error(d: Diagnostic, werror: bool) -> bool:
    return d.severity == "error" or (werror and d.severity == "warning")


def _ordered(diags: list[Diagnostic]) -> list[Diagnostic]:
    return sorted(diags, key=lambda d: (d.span.path, d.span.line, d.span.column) if d.span else ("", 0, 0))
