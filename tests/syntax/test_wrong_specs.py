"""Golden wrong specs: each file under wrong/ says, in its header, what flowc must report.

Every file starts with comment lines such as

    # ERROR: unknown-node 12:14
    # WARNING: dead-end-node 7:8

(`#` is a comment in both `.flow` and YAML). Compiling the file must produce exactly the listed
errors — code, line and column, nothing more and nothing less — and at least the listed warnings.
Each listed finding must also render as `file:line:col: severity[code]: message` with the source
line, a caret under the column, a hint and the `flowc explain <code>` pointer. This is FileCheck's idea (xDSL
`tests/filecheck`) with positions checked exactly, as in xDSL's `test_parser_error.py`.

To add a case: write the smallest spec with one mistake and a header with `?` for the position
(`# ERROR: unknown-node ?`), run `python tests/syntax/test_wrong_specs.py wrong/<file>` to fill in
the positions flowc reports, and read the printed diagnostics: the place and the wording must be
right before the case is committed.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

import flowc
from flowc.cli.main import main
from flowc.errors import ERROR_CODES, Diagnostic, FlowcError, SpecErrors
from flowc.ir.graph import FlowGraph, Param
from flowc.passes.base import Pass, PassContext
from flowc.source import SourceFile
from flowc.spec.io import parse_yaml
from flowc.syntax.parser import MAX_BYTES, parse_flow

WRONG = Path(__file__).parent / "wrong"
CASES = sorted(p for p in WRONG.iterdir() if p.suffix in (".flow", ".yaml", ".yml", ".json"))
HEADER = re.compile(r"^# (ERROR|WARNING): ([a-z][a-z-]*) (\d+):(\d+)\s*$")

#: Codes about a spec's text that the corpus must show at least once. The others are covered by
#: the dedicated tests below (file-not-found, input-too-large, ir-verify-failed, the pass codes),
#: or are run-time codes; `unknown-tool` has no static check yet (see docs/errors.md).
NOT_IN_CORPUS = {
    "file-not-found",
    "input-too-large",
    "ir-verify-failed",
    "unknown-tool",
    "unknown-pass",
    "invalid-pass-option",
    "duplicate-plugin",
}
SPEC_CODES = ERROR_CODES[: ERROR_CODES.index("duplicate-plugin") + 1]


@dataclass(frozen=True)
class Expected:
    severity: str
    code: str
    line: int
    column: int

    def key(self) -> tuple[str, int, int]:
        return (self.code, self.line, self.column)


def expectations(path: Path) -> list[Expected]:
    """The header: the leading comment lines that name a finding."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        m = HEADER.match(line)
        if m:
            out.append(Expected(m.group(1).lower(), m.group(2), int(m.group(3)), int(m.group(4))))
    return out


def findings(path: Path) -> list[Diagnostic]:
    """Everything flowc says about a spec file: its errors, or a compiled pipeline's warnings."""
    try:
        return list(flowc.compile(str(path)).diagnostics)
    except SpecErrors as e:
        return list(e.diagnostics)
    except FlowcError as e:
        return [e.diagnostic]


def _key(d: Diagnostic) -> tuple[str, int, int]:
    assert d.span is not None, f"{d.code} has no position: {d.message}"
    return (d.code, d.span.line, d.span.column)


def _show(diags: list[Diagnostic]) -> str:
    return "\n".join(f"  {d.severity}[{d.code}] {d.span}: {d.message}" for d in diags)


@pytest.mark.parametrize("path", CASES, ids=[p.name for p in CASES])
def test_wrong_spec(path: Path) -> None:
    want = expectations(path)
    assert want, f"{path.name}: no '# ERROR: code line:col' header"
    for w in want:
        assert w.code in ERROR_CODES, f"{path.name}: '{w.code}' is not an error code"
    got = findings(path)
    errors = Counter(_key(d) for d in got if d.severity == "error")
    warnings = Counter(_key(d) for d in got if d.severity == "warning")
    want_errors = Counter(w.key() for w in want if w.severity == "error")
    want_warnings = Counter(w.key() for w in want if w.severity == "warning")
    assert errors == want_errors, f"{path.name}: errors differ; flowc reported:\n{_show(got)}"
    assert not (want_warnings - warnings), f"{path.name}: a listed warning is missing; flowc reported:\n{_show(got)}"

    source = SourceFile.read(path)
    for w in want:
        d = next(d for d in got if _key(d) == w.key() and d.severity == w.severity)
        text = d.render(source)
        head, *rest = text.splitlines()
        assert head.startswith(f"{path}:{w.line}:{w.column}: {w.severity}[{w.code}]: "), head
        assert len(head) > len(f"{path}:{w.line}:{w.column}: {w.severity}[{w.code}]: ") + 10, "a real message"
        # the quoted source line, then a caret line whose first '^' sits under the column
        quoted = next(i for i, ln in enumerate(rest) if re.match(rf"^\s*{w.line} \| ", ln))
        caret = rest[quoted + 1]
        gutter = caret.index("|") + 2
        assert caret.lstrip(" |").startswith("^"), caret
        assert caret.index("^") - gutter == w.column - 1, f"caret not under column {w.column}:\n{text}"
        assert "hint: " in text, f"no hint:\n{text}"
        assert text.rstrip().endswith(f"see: flowc explain {w.code}"), text


def test_corpus_is_large_and_covers_every_spec_code() -> None:
    assert len(CASES) >= 45
    shown = {w.code for p in CASES for w in expectations(p)}
    missing = [c for c in SPEC_CODES if c not in shown and c not in NOT_IN_CORPUS]
    assert not missing, f"no wrong spec shows: {', '.join(missing)}"


def test_all_errors_of_a_spec_come_out_in_one_run() -> None:
    path = WRONG / "many_errors.flow"
    with pytest.raises(SpecErrors) as info:
        flowc.compile(str(path))
    errors = info.value.errors
    assert len(errors) >= 10
    assert len({d.code for d in errors}) >= 9
    # rendered in source order, each with its excerpt
    text = info.value.render()
    lines = [int(m.group(1)) for m in re.finditer(rf"^{re.escape(str(path))}:(\d+):\d+: ", text, re.M)]
    assert lines == sorted(lines) and len(lines) == len(info.value.diagnostics)


def test_yaml_and_flow_report_the_same_codes() -> None:
    yaml_codes = {d.code for d in findings(WRONG / "many_errors.yaml") if d.severity == "error"}
    assert yaml_codes == {"unknown-node", "template-unbound-var", "unknown-metric"}


# -- the codes that need more than a file ----------------------------------------------------------


def test_input_too_large() -> None:
    big = "#" * (MAX_BYTES + 1)
    for parse, name in ((parse_flow, "big.flow"), (parse_yaml, "big.yaml")):
        with pytest.raises(SpecErrors) as info:
            parse(big, name)
        [d] = info.value.diagnostics
        assert (d.code, d.span and (d.span.line, d.span.column)) == ("input-too-large", (1, 1))
        assert d.hint


def test_file_not_found() -> None:
    with pytest.raises(FlowcError) as info:
        flowc.compile(str(WRONG / "no_such_spec.flow"))
    assert info.value.code == "file-not-found"
    assert "files there: " in (info.value.hint or "")  # it lists some specs that are there


@dataclass(frozen=True)
class _BreaksTheIR(Pass):
    """A broken pass: leaves a param that belongs to no node."""

    name = "breaks-the-ir"

    def run(self, graph: FlowGraph, ctx: PassContext) -> FlowGraph:
        graph.params["ghost.prompt"] = Param("ghost.prompt", "prompt", "x", True, "ghost")
        return graph


def test_ir_verify_failed_names_the_pass() -> None:
    with pytest.raises(FlowcError) as info:
        flowc.compile(str(WRONG / "lib" / "qa_step.flow"), passes=[_BreaksTheIR()])
    assert info.value.code == "ir-verify-failed"
    assert "after pass 'breaks-the-ir'" in str(info.value)
    assert "ghost" in str(info.value)


def test_duplicate_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    from flowc.passes import registry

    class _Clash(Pass):
        name = "check-types"

    class _EntryPoint:
        value = "someone.plugin:Clash"

        def load(self) -> type[Pass]:
            return _Clash

    monkeypatch.setattr(registry, "entry_points", lambda group: [_EntryPoint()])
    registry.all_passes.cache_clear()
    try:
        with pytest.raises(FlowcError) as info:
            registry.all_passes()
        assert info.value.code == "duplicate-plugin"
        assert "someone.plugin:Clash" in str(info.value)
    finally:
        registry.all_passes.cache_clear()


# -- the command line: exit codes 0 / 1 / 2 -----------------------------------------------------------


def test_cli_exits_1_on_errors_and_prints_each(capsys: pytest.CaptureFixture[str]) -> None:
    path = WRONG / "many_errors.flow"
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    for w in expectations(path):
        assert f"{path}:{w.line}:{w.column}: {w.severity}[{w.code}]" in err
    assert err.count("see: flowc explain ") == len(findings(path))
    assert "10 errors" in err


def test_cli_exits_0_on_warnings_only(capsys: pytest.CaptureFixture[str]) -> None:
    path = WRONG / "dead_end_node.flow"
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr()
    assert f"{path}:12:8: warning[dead-end-node]" in out.err
    assert "ok" in out.out
    assert main(["check", "--werror", str(path)]) == 1


def test_cli_exits_2_on_a_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(WRONG / "no_such_spec.flow")]) == 2
    assert "error[file-not-found]" in capsys.readouterr().err


def test_cli_pass_list_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    spec = str(WRONG / "lib" / "qa_step.flow")
    out = str(tmp_path / "build")
    assert main(["compile", spec, "-o", out, "-p", "check-typs"]) == 1
    err = capsys.readouterr().err
    assert "error[unknown-pass]" in err and "did you mean 'check-types'?" in err
    assert main(["compile", spec, "-o", out, "-p", "check-types{strict=1}"]) == 1
    assert "error[invalid-pass-option]" in capsys.readouterr().err


# -- filling in a new case's header ----------------------------------------------------------------

_TODO = re.compile(r"^# (ERROR|WARNING): ([a-z][a-z-]*) \?\s*$")


def fill_positions(path: Path) -> None:
    """Replace `?` in the header with the position of the matching finding, then print them all."""
    from flowc.errors import render_all

    got = sorted(findings(path), key=lambda d: (d.span.line, d.span.column) if d.span else (0, 0))
    used: set[int] = set()
    lines = path.read_text(encoding="utf-8").split("\n")
    for i, line in enumerate(lines):
        m = _TODO.match(line)
        if not m:
            continue
        sev, code = m.group(1).lower(), m.group(2)
        j = next((j for j, d in enumerate(got) if j not in used and (d.severity, d.code) == (sev, code)), None)
        if j is None or got[j].span is None:
            print(f"{path.name}: flowc reports no {sev} {code}")
            continue
        used.add(j)
        span = got[j].span
        assert span is not None
        lines[i] = f"# {m.group(1)}: {code} {span.line}:{span.column}"
    path.write_text("\n".join(lines), encoding="utf-8")
    print(render_all(got, {str(path): SourceFile.read(path)}))


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        fill_positions(Path(arg))
