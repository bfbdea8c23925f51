"""docs/errors.md and the ErrorCode Literal stay in step (pydantic's `tests/test_docs.py` idea).

After changing a message, refresh the outputs shown in docs/errors.md (what `flowc check` prints
for each example) with `python tests/test_error_docs.py`; review the diff like a snapshot update.

- the `## <code>` headings are exactly the codes, once each, in the Literal's order;
- every code that flowc's source raises or reports is a documented code (found by reading the
  source: the first argument of Diagnostic(...), FlowcError(...) and its subclasses, report(...));
- every documented example spec still produces its section's code, and the positions shown in the
  section's output are the positions flowc reports today.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

import flowc
from flowc.errors import ERROR_CODES, FlowcError, SpecErrors

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "errors.md"
LIB = Path(__file__).parent / "syntax" / "wrong" / "lib" / "qa_step.flow"
#: The corpus the examples declare (`corpus wiki = "data/wiki.jsonl"`): copied beside each example.
DATA = Path(__file__).parent / "syntax" / "wrong" / "data"
CODE = re.compile(r"^[a-z]+(?:-[a-z]+)+$")

#: Codes in the Literal that nothing raises yet, each with the reason (kept short on purpose).
RESERVED = {"unknown-tool": "tool names are checked at run time (tool-not-registered) for now"}


def _sections() -> dict[str, str]:
    text = DOCS.read_text(encoding="utf-8")
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def _headings() -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^## (.+)$", DOCS.read_text(encoding="utf-8"), re.M)]


def test_headings_are_the_codes_once_each_in_order() -> None:
    heads = _headings()
    dupes = sorted({h for h in heads if heads.count(h) > 1})
    assert not dupes, f"documented twice: {dupes}"
    assert set(heads) - set(ERROR_CODES) == set(), "sections for codes not in ErrorCode"
    assert set(ERROR_CODES) - set(heads) == set(), "codes without a '## <code>' section in docs/errors.md"
    assert heads == list(ERROR_CODES), "sections are not in the order of ErrorCode in flowc/errors.py"


@pytest.mark.parametrize("code", ERROR_CODES)
def test_each_section_explains_and_fixes(code: str) -> None:
    body = _sections()[code]
    assert len(body.split()) >= 25, f"section '{code}' is too thin to explain the code"
    assert "**Fix:**" in body, f"section '{code}' has no '**Fix:**'"


def _raised_codes() -> dict[str, list[str]]:
    """Codes passed as the first argument (or `code=`) to the calls that create diagnostics."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "flowc").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.AnnAssign) and ast.unparse(node.annotation) == "ErrorCode" and node.value:
                # `code: ErrorCode = "a" if ... else "b"`, then report(code, ...)
                for c in ast.walk(node.value):
                    if isinstance(c, ast.Constant) and isinstance(c.value, str) and CODE.match(c.value):
                        found.setdefault(c.value, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
                continue
            if not isinstance(node, ast.Call):
                continue
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""
            if not (
                name in ("Diagnostic", "report", "err", "_Limits", "PydanticCustomError", "__init__")
                or name.endswith(("Error", "Exceeded", "Timeout", "Limited"))
            ):
                continue
            args = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "code")]
            for a in args:
                if isinstance(a, ast.Constant) and isinstance(a.value, str) and CODE.match(a.value):
                    found.setdefault(a.value, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_raised_code_is_a_documented_code() -> None:
    found = _raised_codes()
    assert len(found) >= 40, "the source scan found too few codes; did the call names change?"
    unknown = {c: where for c, where in found.items() if c not in ERROR_CODES}
    assert not unknown, f"codes used in flowc but missing from ErrorCode and docs/errors.md: {unknown}"


def test_every_code_is_raised_somewhere() -> None:
    found = _raised_codes()
    unused = [c for c in ERROR_CODES if c not in found and c not in RESERVED]
    assert not unused, f"codes in ErrorCode that nothing raises (remove them or add to RESERVED): {unused}"
    stale = [c for c in RESERVED if c in found]
    assert not stale, f"codes listed as reserved but raised now: {stale}"


_EXAMPLE = re.compile(r"```(flow|yaml)\n(.*?)```", re.S)
_OUTPUT = re.compile(r"```text\n(.*?)```", re.S)
_FINDING = re.compile(r"^(spec\.\w+:\d+:\d+: \w+\[[a-z-]+\])", re.M)


def _documented_examples() -> list[tuple[str, str, str, str]]:
    out = []
    for code, body in _sections().items():
        ex = _EXAMPLE.search(body)
        said = _OUTPUT.search(body, ex.end()) if ex else None
        if ex and said:
            out.append((code, ex.group(1), ex.group(2), said.group(1)))
    return out


EXAMPLES = _documented_examples()


def test_most_spec_codes_have_a_runnable_example() -> None:
    assert len(EXAMPLES) >= 40


@pytest.mark.parametrize(("code", "lang", "spec", "shown"), EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_documented_example_reports_its_code(
    code: str, lang: str, spec: str, shown: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(LIB, tmp_path / "qa_step.flow")  # the examples that import a flow import this one
    shutil.copytree(DATA, tmp_path / "data")
    (tmp_path / f"spec.{lang}").write_text(spec, encoding="utf-8")
    monkeypatch.chdir(tmp_path)  # the docs show paths as `spec.flow`
    try:
        diags = list(flowc.compile(f"spec.{lang}").diagnostics)
    except SpecErrors as e:
        diags = list(e.diagnostics)
    except FlowcError as e:
        diags = [e.diagnostic]
    reported = {f"{d.span}: {d.severity}[{d.code}]" for d in diags}
    assert any(f"[{code}]" in r for r in reported), f"the example of '{code}' no longer reports it: {reported}"
    documented = set(_FINDING.findall(shown))
    assert documented <= reported, (
        f"docs/errors.md#{code} shows findings flowc no longer reports there: {sorted(documented - reported)}; "
        f"flowc reports {sorted(reported)} — update the section's output"
    )


# -- refreshing the documented outputs ------------------------------------------------------------

_SHOWN = re.compile(
    r"(```(flow|yaml)\n(.*?)```\n\n`flowc check spec\.\w+` says \(exit code )\d+(\):\n\n```text\n).*?(```)", re.S
)


def _check_output(lang: str, spec: str) -> tuple[int, str]:
    """Run `flowc check spec.<lang>` in a scratch folder; (exit code, what it printed)."""
    from flowc.cli.main import main

    # a fixed folder, so that messages quoting an absolute path do not change from run to run
    tmp = Path(tempfile.gettempdir()) / "specs"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    shutil.copy(LIB, tmp / "qa_step.flow")
    shutil.copytree(DATA, tmp / "data")
    (tmp / f"spec.{lang}").write_text(spec, encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(["check", f"spec.{lang}"])
    finally:
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)
    said = err.getvalue().rstrip("\n")
    if out.getvalue().strip():
        said += "\n" + out.getvalue().rstrip("\n")
    return rc, said.strip("\n")


def regenerate() -> int:
    """Rewrite every example's output block in docs/errors.md with what flowc prints now."""
    text = DOCS.read_text(encoding="utf-8")

    def fresh(m: re.Match[str]) -> str:
        rc, said = _check_output(m.group(2), m.group(3))
        return f"{m.group(1)}{rc}{m.group(4)}{said}\n{m.group(5)}"

    new, n = _SHOWN.subn(fresh, text)
    if new != text:
        DOCS.write_text(new, encoding="utf-8")
    print(f"{n} example outputs checked; docs/errors.md {'updated' if new != text else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(regenerate())


# -- `flowc explain`: the pointer every diagnostic ends with -------------------------------------------


def test_the_installed_package_carries_this_page() -> None:
    from flowc.cli.explain_command import reference_text

    assert reference_text() == DOCS.read_text(encoding="utf-8")


@pytest.mark.parametrize("code", ERROR_CODES)
def test_flowc_explain_prints_each_codes_section(code: str, capsys: pytest.CaptureFixture[str]) -> None:
    from flowc.cli.main import main

    assert main(["explain", code]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{code}\n") and "**Fix:**" in out and "\n## " not in out


def test_flowc_explain_of_an_unknown_code_suggests_one(capsys: pytest.CaptureFixture[str]) -> None:
    from flowc.cli.main import main

    assert main(["explain", "unknown-nod"]) == 1
    assert "did you mean 'unknown-node'?" in capsys.readouterr().err
