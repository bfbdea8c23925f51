"""Commands on specs: check, lint, compile, fmt, graph, schema."""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

import flowc
from flowc.compile import CompiledPipeline, load_spec
from flowc.errors import Diagnostic, FlowcError, SpecErrors, render_all
from flowc.ir.graph import FlowGraph
from flowc.ir.printer import dump_ir
from flowc.ir.render import to_dot, to_mermaid
from flowc.passes.pipeline import parse_pass_list
from flowc.source import SourceFile
from flowc.spec.io import dump_json, dump_yaml
from flowc.spec.models import Pipeline
from flowc.syntax.printer import print_flow


def register(sub: Any) -> None:
    p = sub.add_parser("check", help="check specs and report every error with its place")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--werror", action="store_true", help="treat warnings as errors")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing when a spec is fine")
    p.add_argument("--format", choices=("text", "json", "sarif"), default="text", help="json or SARIF 2.1.0 on stdout")
    p.add_argument("--json", action="store_const", const="json", dest="format", help="same as --format json")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("lint", help="check with warnings as errors, and compare with canonical formatting")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--strict-format", action="store_true", help="fail when a file is not canonically formatted")
    p.set_defaults(func=cmd_lint)

    p = sub.add_parser("compile", help="compile a spec into a content-hashed artifact and lockfile")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("-o", "--out", default=".flowc/build", help="output directory (default .flowc/build)")
    p.add_argument("-p", "--passes", help="passes to run, e.g. 'check-types,estimate-cost' (default: all)")
    p.add_argument("--print-ir-after", metavar="PASS", help="print the IR after this pass ('lower' for before any)")
    p.add_argument("--no-verify-each", action="store_true", help="skip IR verification between passes")
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser("fmt", help="print a spec in canonical form, or convert it (--to yaml|json|flow)")
    p.add_argument("specs", nargs="+", metavar="SPEC")
    p.add_argument("--to", choices=("flow", "yaml", "json"), help="output format (default: the input's)")
    p.add_argument("--write", "-w", action="store_true", help="rewrite the file in place (or write the converted file)")
    p.add_argument("--check", action="store_true", help="exit 1 if a file is not canonically formatted")
    p.add_argument(
        "--drop-comments", action="store_true", help="let --write rewrite a file in place although it has comments"
    )
    p.set_defaults(func=cmd_fmt)

    p = sub.add_parser("graph", help="draw a pipeline as Mermaid or Graphviz DOT")
    p.add_argument("spec", metavar="SPEC")
    p.add_argument("--format", "-f", choices=("mermaid", "dot", "ir"), default="mermaid")
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("schema", help="print the JSON Schema of the YAML/JSON spec form")
    p.add_argument("-o", "--out", help="write to this file instead of stdout")
    p.set_defaults(func=cmd_schema)


def _print_diags(diags: list[Diagnostic], spec_path: str) -> None:
    if diags:
        sources = {spec_path: SourceFile.read(spec_path)} if Path(spec_path).is_file() else {}
        print(render_all(diags, sources), file=sys.stderr)


def _check_one(path: str, werror: bool, quiet: bool) -> tuple[int, int]:
    """(errors, warnings) of one spec, printed."""
    try:
        compiled = flowc.compile(path)
    except SpecErrors as e:
        print(e.render(), file=sys.stderr)
        return len(e.errors), len(e.diagnostics) - len(e.errors)
    from flowc.runtime.adapters import base_diagnostics

    mismatched = base_diagnostics(compiled)  # adapters trained on another base than their model's
    if mismatched:
        _print_diags([*mismatched, *compiled.warnings], path)
        return len(mismatched), len(compiled.warnings)
    warnings = compiled.warnings
    _print_diags(list(warnings), path)
    if not quiet:
        cost = compiled.cost
        calls = (
            f"; LM calls per input: {cost.best_calls}–{cost.worst_calls if cost.worst_calls is not None else '∞'}"
            if cost
            else ""
        )
        print(
            f"{path}: ok ({len(compiled.graph)} nodes{calls})" + (f", {len(warnings)} warning(s)" if warnings else "")
        )
    return (len(warnings) if werror else 0), len(warnings)


def cmd_check(args: argparse.Namespace) -> int:
    if args.format != "text":  # the same findings, machine-readable (diag_formats.py)
        from flowc.cli.diag_formats import render

        text, errors = render(args.specs, args.format, args.werror)
        print(text)
        return 1 if errors else 0
    total_e = total_w = 0
    for path in args.specs:
        e, w = _check_one(path, args.werror, args.quiet)
        total_e += e
        total_w += w
    if total_e:
        print(
            f"\n{total_e} error{'s' if total_e != 1 else ''}" + (f", {total_w} warning(s)" if total_w else ""),
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_lint(args: argparse.Namespace) -> int:
    bad = 0
    for path in args.specs:
        e, _w = _check_one(path, werror=True, quiet=True)
        bad += e
        if e == 0 and _needs_format(path):
            # Comments and hand layout are the author's; only --strict-format makes this fail.
            print(f"{path}: note: differs from canonical formatting ('flowc fmt {path}' shows it)", file=sys.stderr)
            bad += 1 if args.strict_format else 0
    if not bad:
        print(f"{len(args.specs)} spec(s) clean")
    return 1 if bad else 0


def _format(spec: Pipeline, to: str) -> str:
    return {"flow": print_flow, "yaml": dump_yaml, "json": dump_json}[to](spec)


def _kind(path: str) -> str:
    return "yaml" if path.endswith((".yaml", ".yml")) else "json" if path.endswith(".json") else "flow"


def _needs_format(path: str) -> bool:
    spec = load_spec(path)
    return Path(path).read_text(encoding="utf-8") != _format(spec, _kind(path))


def cmd_fmt(args: argparse.Namespace) -> int:
    changed = 0
    for path in args.specs:
        spec = load_spec(path)
        source = Path(path).read_text(encoding="utf-8")
        to = args.to or _kind(path)
        text = _format(spec, to)
        if args.check:
            if to == _kind(path) and source != text:
                print(f"would reformat {path}", file=sys.stderr)
                changed += 1
            continue
        comments = _comment_lines(source, _kind(path))
        if args.write:
            target = (
                Path(path)
                if to == _kind(path)
                else Path(path).with_suffix({"flow": ".flow", "yaml": ".yaml", "json": ".json"}[to])
            )
            if comments and target == Path(path) and not args.drop_comments:
                raise FlowcError(
                    "fmt-would-drop-comments",
                    f"{path}: rewriting would drop {len(comments)} comment{'s' * (len(comments) > 1)} "
                    f"(lines {', '.join(map(str, comments[:10]))}{', …' if len(comments) > 10 else ''})",
                    hint="keep the file as it is, or pass --drop-comments to rewrite it without them",
                )
            old = target.read_text(encoding="utf-8") if target.exists() else ""
            if old != text:
                target.write_text(text, encoding="utf-8")
                diff = difflib.unified_diff(old.splitlines(), text.splitlines(), str(target), str(target), lineterm="")
                print("\n".join(diff) if old else f"wrote {target}")
        else:
            sys.stdout.write(text)
        if comments and not (args.write and args.drop_comments):
            print(f"{path}: note: its {len(comments)} comment(s) are not carried over by fmt", file=sys.stderr)
    return 1 if changed else 0


def _comment_lines(text: str, kind: str) -> list[int]:
    from flowc.syntax.comments import flow_comment_lines, yaml_comment_lines

    return flow_comment_lines(text) if kind == "flow" else yaml_comment_lines(text) if kind == "yaml" else []


def cmd_compile(args: argparse.Namespace) -> int:
    passes = parse_pass_list(args.passes) if args.passes else None
    want = args.print_ir_after

    def on_pass(name: str, graph: FlowGraph) -> None:
        if want in (name, "all"):
            print(f"// IR after {name}\n{dump_ir(graph)}")

    if want == "lower":
        from flowc.ir.lower import lower

        graph, _ = lower(load_spec(args.spec))
        print(f"// IR after lower\n{dump_ir(graph)}")
    compiled: CompiledPipeline = flowc.compile(
        args.spec, passes=passes, verify_each=not args.no_verify_each, on_pass=on_pass if want else None
    )
    _print_diags(compiled.warnings, args.spec)
    art, lock = compiled.write(args.out)
    cost = compiled.cost
    print(
        f"compiled {compiled.name}: {len(compiled.graph)} nodes, {len(compiled.params)} params, "
        f"passes {', '.join(compiled.pass_log)}"
    )
    if cost:
        worst = cost.worst_calls if cost.worst_calls is not None else "unbounded"
        print(f"LM calls per input: best {cost.best_calls}, worst {worst}")
    print(f"artifact {art} (sha256 {compiled.hash[:16]}…)\nlockfile {lock}")
    return 0


def cmd_graph(args: argparse.Namespace) -> int:
    compiled = flowc.compile(args.spec)
    out = {"mermaid": to_mermaid, "dot": to_dot, "ir": dump_ir}[args.format](compiled.graph)
    sys.stdout.write(out)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from flowc.spec.schema import json_schema

    schema = json_schema()
    text = json.dumps(schema, indent=2) + "\n"
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0
