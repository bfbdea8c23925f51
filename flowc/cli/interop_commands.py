"""`flowc import promptflow` and `flowc export --to dspy`: conversions to and from other tools
(docs/interop.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError, SpecErrors, render_all


def register(sub: Any) -> None:
    p = sub.add_parser("import", help="convert another tool's pipeline into a flowc spec")
    isub = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    pf = isub.add_parser("promptflow", help="a Prompt flow DAG flow (flow.dag.yaml)")
    pf.add_argument("path", metavar="FLOW", help="the flow.dag.yaml, or its folder")
    pf.add_argument("-o", "--out", help="the .flow file to write (default: print it)")
    pf.add_argument("--name", help="the pipeline's name (default: the flow folder's name)")
    pf.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="CONNECTION=ID",
        help="the litellm model a connection becomes, e.g. open_ai_connection=openai/gpt-4o-mini (repeatable)",
    )
    pf.add_argument("--quiet", "-q", action="store_true", help="print errors and warnings only, not notes")
    pf.set_defaults(func=cmd_import_promptflow)

    p = sub.add_parser("export", help="convert a pipeline into another tool's program")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--to", required=True, choices=("dspy",), help="the target (dspy: a DSPy 3.x program)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="where program.py and program.json go")
    p.set_defaults(func=cmd_export)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise FlowcError("invalid-value", f"'{flag} {item}' is not NAME=VALUE", hint=f"e.g. {flag} a=b")
        out[key.strip()] = value.strip()
    return out


def cmd_import_promptflow(args: argparse.Namespace) -> int:
    import flowc
    from flowc.interop.promptflow import import_promptflow

    result = import_promptflow(args.path, name=args.name, models=_pairs(args.model, "--model"))
    shown = [d for d in result.diagnostics if not (args.quiet and d.severity == "note")]
    if shown:
        print(render_all(shown, result.sources), file=sys.stderr)
    if not result.ok:
        n = sum(1 for d in result.diagnostics if d.severity == "error")
        print(f"\n{n} error{'s' if n != 1 else ''}: nothing written", file=sys.stderr)
        return 1
    if not args.out:
        sys.stdout.write(result.text)
        return 0
    out = Path(args.out)
    out.write_text(result.text, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    try:  # the converted spec is checked like any other
        compiled = flowc.compile(out)
    except SpecErrors as e:
        print(e.render(), file=sys.stderr)
        return 1
    if compiled.diagnostics:
        print(render_all(list(compiled.diagnostics), {}), file=sys.stderr)
    if result.tools:
        names = ", ".join(fn for fn, _ in result.tools)
        print(f"register the tools {names} before running it (docs/language.md#tool)", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import flowc

    compiled = flowc.compile(args.spec)
    try:
        from flowc.interop.dspy.export import export_dspy
    except ModuleNotFoundError as e:
        if e.name != "dspy":
            raise
        raise FlowcError(
            "export-unsupported", "the DSPy export needs the 'dspy' package", hint="pip install 'flowc[dspy]'"
        ) from None
    program, state, warnings = export_dspy(compiled, args.out)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {program} and {state}", file=sys.stderr)
    return 0
