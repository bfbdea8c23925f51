"""`flowc import promptflow`: our own fixtures in Prompt flow's DAG format (tests/interop/promptflow/),
covering what real flows use: chat prompts with role lines, variants, python tools returning dicts,
connections, `activate` conditions, and the constructs flowc refuses."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

import flowc
from flowc.cli.main import main
from flowc.interop.promptflow import import_promptflow
from flowc.interop.promptflow.jinja import convert_prompt
from flowc.runtime.executor import Executor
from flowc.runtime.lm import LMRequest
from flowc.runtime.tools import ToolRegistry
from flowc.source import SourceFile
from flowc.testing.optimizer_fakes import FunctionLM

FIXTURES = Path(__file__).parent / "promptflow"


def _tool(monkeypatch: pytest.MonkeyPatch, folder: str, name: str) -> Any:
    """The fixture's @tool function, loaded as Prompt flow would (with a stand-in `tool` decorator)."""
    for mod in ("promptflow", "promptflow.core"):
        stub = types.ModuleType(mod)
        stub.tool = lambda f: f  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, mod, stub)
    spec = importlib.util.spec_from_file_location(name, FIXTURES / folder / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def _found(result: Any) -> set[tuple[str, int, int, str, str]]:
    return {
        (Path(d.span.path).name, d.span.line, d.span.column, d.severity, d.code)
        for d in result.diagnostics
        if d.span is not None
    }


def test_classify_flow_converts_and_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    result = import_promptflow(FIXTURES / "classify" / "flow.dag.yaml")
    assert result.ok, result.diagnostics
    spec = result.pipeline
    assert spec is not None and spec.pipeline == "classify"
    dump = spec.dump()
    assert dump["models"] == {"gpt_4o_mini": {"id": "openai/gpt-4o-mini", "max_tokens": 64}}
    summarize = dump["nodes"]["summarize"]  # the default variant, its {# comment #} gone
    assert summarize["system"] == "You summarize web pages in one sentence."
    assert summarize["prompt"] == "Page: {{page}}\nSummary:"
    label = dump["nodes"]["label_page"]
    assert label["prompt"].endswith('Reply as JSON: {"label": ..., "reason": ...}')  # a string literal's text
    tool = dump["nodes"]["parse_label"]
    assert tool["function"] == "parse_label"
    assert tool["inputs"] == {"reply": "label_page.text", "default_label": '"other"', "max_reason_words": "12"}
    assert set(tool["outputs"]) == {"label", "reason"}
    assert dump["outputs"]["label"]["source"] == "parse_label.label"
    # every dropped setting is reported where it is
    found = _found(result)
    assert ("flow.dag.yaml", 48, 25, "warning", "import-dropped") in found  # the 'long' variant
    assert ("flow.dag.yaml", 32, 5, "note", "import-dropped") in found  # top_p: 1

    compiled = flowc.compile(result.text)

    def answer(req: LMRequest) -> str:
        text = req.messages[-1].content
        if text.startswith("Page:"):
            return "A recipe for butter biscuits."
        assert "Summary: A recipe for butter biscuits." in text
        return '{"label": "recipe", "reason": "it gives baking steps and times for a dish"}'

    tools = ToolRegistry({"parse_label": _tool(monkeypatch, "classify", "parse_label")}, load_plugins=False)
    run = Executor(compiled, lm=FunctionLM(answer), tools=tools).run_sync({"page": "Stir the flour..."})
    assert run.status == "ok", run.error
    assert run.outputs == {"label": "recipe", "reason": "it gives baking steps and times for a dish"}


@pytest.mark.parametrize(("route", "other"), [("billing", "shipping"), ("shipping", "billing")])
def test_activate_on_an_llm_answer_becomes_a_router(monkeypatch: pytest.MonkeyPatch, route: str, other: str) -> None:
    result = import_promptflow(FIXTURES / "router")
    assert result.ok, result.diagnostics
    dump = result.pipeline.dump() if result.pipeline else {}
    assert dump["models"] == {"gpt_35_turbo": {"id": "azure/gpt-35-turbo"}}
    assert dump["nodes"]["triage"]["outputs"] == {"route": "route[billing, shipping]"}
    assert dump["nodes"]["format_reply"]["inputs"] == {
        "billing": "billing.text ?? null",
        "shipping": "shipping.text ?? null",
    }
    compiled = flowc.compile(result.text)
    assert [d.code for d in compiled.warnings] == ["route-without-fallback"]

    def answer(req: LMRequest) -> str:
        text = req.messages[-1].content
        if "billing questions" in text:
            return "Your invoice is on its way."
        if "shipping questions" in text:
            return "Your parcel ships tomorrow."
        return route

    tools = ToolRegistry({"format_reply": _tool(monkeypatch, "router", "format_reply")}, load_plugins=False)
    run = Executor(compiled, lm=FunctionLM(answer), tools=tools).run_sync({"question": "where is my money?"})
    assert run.status == "ok", run.error
    assert route in run.path and other not in run.path
    assert run.outputs["answer"] == (
        "Your invoice is on its way." if route == "billing" else "Your parcel ships tomorrow."
    )


def test_refused_constructs_are_located() -> None:
    result = import_promptflow(FIXTURES / "rejected" / "flow.dag.yaml")
    assert not result.ok and result.pipeline is None
    errors = {(f, line, col, code) for f, line, col, sev, code in _found(result) if sev == "error"}
    assert errors == {
        ("answer.jinja2", 3, 1, "template-jinja"),  # {% for %}
        ("answer.jinja2", 5, 1, "template-jinja"),  # item.inputs.question
        ("answer.jinja2", 7, 1, "template-jinja"),
        ("answer.jinja2", 10, 1, "template-jinja"),  # | join
        ("flow.dag.yaml", 5, 11, "import-unsupported"),  # type: image
        ("flow.dag.yaml", 25, 11, "import-unsupported"),  # a package tool
        ("flow.dag.yaml", 30, 9, "import-unsupported"),  # a prompt node
        ("flow.dag.yaml", 49, 11, "import-unsupported"),  # activate on a python node
        ("flow.dag.yaml", 58, 16, "import-unsupported"),  # aggregation
    }
    messages = " ".join(d.message for d in result.diagnostics)
    assert "'for' loop" in messages and "filter 'join'" in messages


def _template(tmp_path: Path, text: str) -> tuple[Any, list[Any]]:
    f = tmp_path / "p.jinja2"
    f.write_text(text, encoding="utf-8")
    return convert_prompt(SourceFile.read(f))


def test_jinja_placeholders_comments_and_whitespace_control(tmp_path: Path) -> None:
    t, diags = _template(
        tmp_path, '{# note #}\nsystem:\nBe brief.\nuser:\nQ: {{- q -}}  !\n{{ doc["title"] }} {{"}"}}x'
    )
    assert diags == []
    assert t is not None
    assert t.system == "Be brief."
    assert t.variables == ("q", "doc")
    assert t.prompt == "Q:{{q}}!\n{{doc.title}} }x"  # `{{-` and `-}}` trim the whitespace around
    # a literal '{{' would start a flowc placeholder: refused
    t, diags = _template(tmp_path, 'user:\n{{ "{{" }}')
    assert t is None and diags[0].code == "template-jinja"


def test_jinja_refusals_name_the_construct(tmp_path: Path) -> None:
    t, diags = _template(tmp_path, "# user:\n{% if x %}a{% else %}b{% endif %} {{ f(x) }} {{ x + 1 }}")
    assert t is None
    assert [(d.span.line, d.span.column) for d in diags] == [(2, 1), (2, 35), (2, 46)]
    assert ["'if' block" in diags[0].message, "call 'f(x)'" in diags[1].message, "'x + 1'" in diags[2].message] == [
        True,
        True,
        True,
    ]


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("# user:\nhi {{x}}\n# assistant:\nhello\n# user:\nagain", (3, 1), "'assistant' message"),
        ("# system:\na\n# user:\nb\n# user:\nc", (5, 1), "second 'user'"),
        ("preamble\n# user:\nb", (1, 1), "before the first role line"),
        ("# system:\nonly a system prompt", (1, 1), "no 'user' message"),
    ],
)
def test_chat_roles_flowc_cannot_send(tmp_path: Path, text: str, where: tuple[int, int], says: str) -> None:
    t, diags = _template(tmp_path, text)
    assert t is None
    errors = [d for d in diags if d.severity == "error"]
    assert (errors[0].span.line, errors[0].span.column) == where and says in errors[0].message


def test_names_flowc_reserves_are_renamed(tmp_path: Path) -> None:
    (tmp_path / "p.jinja2").write_text("{{input}}", encoding="utf-8")
    (tmp_path / "flow.dag.yaml").write_text(
        "inputs:\n  input:\n    type: string\noutputs:\n  output:\n    type: string\n    reference: ${my-llm.output}\n"
        "nodes:\n- name: my-llm\n  type: llm\n  source: {type: code, path: p.jinja2}\n"
        "  inputs: {model: m, temperature: 0, input: '${inputs.input}'}\n  connection: c\n  api: chat\n",
        encoding="utf-8",
    )
    result = import_promptflow(tmp_path, name="renamed", models={"c": "local/smollm2"})
    assert result.ok, result.diagnostics
    dump = result.pipeline.dump() if result.pipeline else {}
    assert set(dump["inputs"]) == {"input_"} and set(dump["outputs"]) == {"output_"}
    assert dump["nodes"]["my_llm"]["inputs"] == {"input_": "input_"}
    assert dump["nodes"]["my_llm"]["prompt"] == "{{input_}}"
    assert dump["models"] == {"smollm2": {"id": "local/smollm2"}}
    flowc.compile(result.text)


def test_cli_writes_a_checked_spec_or_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "classify.flow"
    assert main(["import", "promptflow", str(FIXTURES / "classify"), "-o", str(out), "-q"]) == 0
    assert out.exists() and flowc.compile(out).name == "classify"
    err = capsys.readouterr().err
    assert "parse_label" in err and "note[" not in err
    bad = tmp_path / "rejected.flow"
    assert main(["import", "promptflow", str(FIXTURES / "rejected"), "-o", str(bad)]) == 1
    assert not bad.exists()
    assert "9 errors: nothing written" in capsys.readouterr().err
