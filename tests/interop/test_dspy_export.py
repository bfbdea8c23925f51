"""`flowc export --to dspy`: the exported program runs under DSPy 3.x against the fake OpenAI server
and gives what `flowc run` gives for the same scripted replies (loops, routers, maps, retrieval and
tools included), sending the same messages; and the program's state round-trips."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

dspy = pytest.importorskip("dspy")

import flowc  # noqa: E402
from flowc.cli.main import main  # noqa: E402
from flowc.interop.dspy.adapter import FlowcAdapter  # noqa: E402
from flowc.interop.dspy.export import export_dspy, load_program, params_from_program  # noqa: E402
from flowc.runtime.resources import RetrieverPool  # noqa: E402
from flowc.runtime.session import open_executor  # noqa: E402
from flowc.runtime.tools import ToolRegistry  # noqa: E402
from flowc.testing.fake_server import FakeOpenAIServer, Reply  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

REVISE = """
pipeline revise {
  input draft: str
  output text: str <- write.text
  output score: int <- critic.score
  model lm = "openai/fake" { api_base: "URL" }
  node write: llm {
    prompt: "Draft: {{draft}}\\nFeedback: {{feedback}}\\nRewrite the draft."
    draft <- draft
    feedback <- critic.feedback ?? ""
    output text: str
  }
  node critic: llm {
    prompt: "Score this from 0 to 10 and say what to fix: {{text}}"
    format: json
    text <- write.text
    output feedback: str
    output score: int
  }
  loop polish: critic -> write max 3 while critic.score < 8
}
"""

TRIAGE = """
pipeline triage {
  input question: str
  output answer: str <- shout.result ?? careful.answer
  model lm = "openai/fake" { api_base: "URL" }
  node pick: llm {
    system: "You route questions."
    prompt: "Easy or hard? {{question}}"
    fallback: careful
    question <- question
    output route: route[quick, careful]
  }
  node quick: llm {
    prompt: "Answer: {{question}}"
    question <- question
    output answer: str
    demo {question: "2+2?", answer: "4"}
  }
  node shout: tool {
    function: shout
    text <- quick.answer
    output result: str
  }
  node careful: llm {
    prompt: "Think, then answer: {{question}}"
    question <- question
    output answer: str
  }
}
"""

DECOMPOSE = """
pipeline decompose {
  input question: str
  output answers: list[str] <- each.answer
  output labels: list[enum[yes, no]] <- each.ok
  model lm = "openai/fake" { api_base: "URL" }
  node split: llm {
    prompt: "Split into sub-questions: {{question}}"
    format: tagged
    question <- question
    output subs: list[str]
  }
  node each: map {
    over <- split.subs
    item: sub
    max_items: 3
    do: llm {
      prompt: "Main: {{question}}\\nSub: {{sub}}"
      question <- question
      sub <- sub
      output answer: str
      output ok: enum[yes, no]
    }
  }
}
"""


def _reply(body: dict[str, Any]) -> Reply:
    """The scripted model: a function of the last user message (both sides call in any order)."""
    last = body["messages"][-1]["content"]
    if "best matches the search" in last:
        query = re.search(r"Search: (.*)", last)
        return Reply(text=f"Evidence about {query.group(1) if query else '?'}.")
    if "If the facts answer" in last:
        if last.count("Evidence about") < 3:
            return Reply(text=f"<next>search</next><query>follow-up {last.count('Evidence about')}</query>")
        return Reply(text="<next>generate</next>")
    if last.startswith("Passages:") and "\nFacts:\n" in last:
        return Reply(text="Patricia Arquette")
    if last.startswith("Score this"):
        rounds = last.split("fix: ", 1)[1].count("better")
        return Reply(text=json.dumps({"feedback": f"make it better {rounds + 1}", "score": 5 + 2 * rounds}))
    if last.startswith("Draft:"):
        wanted = re.search(r"make it better (\d)", last)
        return Reply(text=("better " * int(wanted.group(1)) if wanted else "") + "draft")
    if last.startswith("Easy or hard?"):
        return Reply(text="quick" if "easy" in last else "no idea")
    if last.startswith(("Answer:", "Think")):
        return Reply(text="forty-two")
    if last.startswith("Split"):
        return Reply(text="<subs>- who?\n- when?\n- where?\n- why?</subs>")
    if last.startswith("Main:"):
        sub = last.rsplit("Sub: ", 1)[-1].split("\n")[0]
        return Reply(text=f"<answer>about {sub}</answer><ok>{'yes' if 'who' in sub else 'no'}</ok>")
    return Reply(text="unexpected prompt")


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-for-tests")
    with FakeOpenAIServer(default=_reply) as srv:
        yield srv


def _spec(tmp_path: Path, text: str, url: str) -> flowc.CompiledPipeline:
    path = tmp_path / "spec.flow"
    path.write_text(text.replace('"URL"', json.dumps(url)), encoding="utf-8")
    return flowc.compile(path)


def _agentic_rag(tmp_path: Path, url: str) -> flowc.CompiledPipeline:
    text = (ROOT / "pipelines" / "agentic_rag.flow").read_text(encoding="utf-8")
    text = re.sub(r'model small = "[^"]+"', f'model small = "openai/fake" {{ api_base: {json.dumps(url)},', text)
    text = text.replace(
        '"openai/fake" { api_base: ' + json.dumps(url) + ", {", '"openai/fake" { api_base: ' + json.dumps(url)
    )
    (tmp_path / "data").mkdir(exist_ok=True)
    shutil.copy(ROOT / "pipelines" / "data" / "tiny_wiki.jsonl", tmp_path / "data" / "tiny_wiki.jsonl")
    path = tmp_path / "agentic_rag.flow"
    path.write_text(text, encoding="utf-8")
    return flowc.compile(path)


def _messages(srv: FakeOpenAIServer, since: int) -> set[str]:
    """The distinct requests sent (flowc's run answers a repeated deterministic request from its cache)."""
    return {json.dumps(h.body["messages"], sort_keys=True) for h in srv.hits_log[since:]}


def _both(srv: FakeOpenAIServer, compiled: flowc.CompiledPipeline, inputs: dict[str, Any], **kwargs: Any) -> Any:
    """Run the pipeline with flowc, then its exported program with DSPy; compare outputs and messages."""
    tools = kwargs.pop("tools", {})
    start = len(srv.hits_log)
    ran = open_executor(compiled, tools=ToolRegistry(tools, load_plugins=False)).run_sync(inputs)
    assert ran.status == "ok", ran.error
    flowc_msgs = _messages(srv, start)
    program = load_program(compiled, tools=tools, **kwargs)
    lm = dspy.LM("openai/fake", api_base=srv.base_url, api_key="sk-fake-for-tests", cache=False)
    mid = len(srv.hits_log)
    with dspy.context(lm=lm, adapter=FlowcAdapter()):
        got = program.instance(**inputs)
    assert {k: got[k] for k in compiled.spec.outputs} == ran.outputs
    assert _messages(srv, mid) == flowc_msgs, "the program sends exactly the messages flowc sends"
    return ran


def test_loop_router_and_retrieval_match_flowc_run(server: FakeOpenAIServer, tmp_path: Path) -> None:
    compiled = _agentic_rag(tmp_path, server.base_url)
    pool = RetrieverPool()
    retriever = asyncio.run(pool.get(tmp_path / "data" / "tiny_wiki.jsonl", "bm25"))

    def search(query: str, k: int) -> list[dict[str, Any]]:
        return [h.to_dict() for h in retriever.search(query, k)]

    ran = _both(server, compiled, {"question": "Which actress was in Ed Wood?"}, retrievers={"wiki": search})
    assert ran.outputs["answer"] == "Patricia Arquette"
    assert ran.path.count("plan") == 3  # two rounds back through the loop, then generate
    assert ran.outputs["searched"] == ["Which actress was in Ed Wood?", "follow-up 1", "follow-up 2"]


def test_data_loop_with_condition_matches(server: FakeOpenAIServer, tmp_path: Path) -> None:
    ran = _both(server, _spec(tmp_path, REVISE, server.base_url), {"draft": "a draft"})
    assert ran.outputs == {"text": "better better draft", "score": 9}


@pytest.mark.parametrize("question", ["an easy one", "a hard one"])
def test_router_fallback_demos_and_tools_match(server: FakeOpenAIServer, tmp_path: Path, question: str) -> None:
    ran = _both(
        server,
        _spec(tmp_path, TRIAGE, server.base_url),
        {"question": question},
        tools={"shout": lambda text: text.upper()},
    )
    assert ran.outputs["answer"] == ("FORTY-TWO" if "easy" in question else "forty-two")


def test_map_matches(server: FakeOpenAIServer, tmp_path: Path) -> None:
    ran = _both(server, _spec(tmp_path, DECOMPOSE, server.base_url), {"question": "Q"})
    assert ran.outputs == {"answers": ["about who?", "about when?", "about where?"], "labels": ["yes", "no", "no"]}


def test_state_round_trip(server: FakeOpenAIServer, tmp_path: Path) -> None:
    compiled = _spec(tmp_path, TRIAGE, server.base_url)
    program_py, state, warnings = export_dspy(compiled, tmp_path / "out")
    assert warnings == ()
    saved = json.loads(state.read_text())
    assert saved["quick"]["demos"] == [{"question": "2+2?", "answer": "4"}]
    assert saved["pick"]["signature"]["instructions"] == "Easy or hard? {{question}}"
    # a fresh program loads the saved state with DSPy's own module.load
    fresh = load_program(compiled, source_dir=program_py.parent)
    fresh.instance.quick.demos = []
    fresh.instance.load(str(state))
    assert [dict(d) for d in fresh.instance.quick.demos] == [{"question": "2+2?", "answer": "4"}]
    assert params_from_program(compiled, fresh) == {}
    # an optimizer's edits come back as flowc params that send what the program sends
    fresh.instance.pick.signature = fresh.instance.pick.signature.with_instructions("Classify the question.")
    fresh.instance.careful.demos = [dspy.Example(question="1+1?", answer="2", augmented=True)]
    params = params_from_program(compiled, fresh)
    assert params == {
        "pick.prompt": "Classify the question.\n\nquestion: {{question}}",
        "careful.demos": [{"question": "1+1?", "answer": "2"}],
    }
    patched = compiled.with_params(params)
    assert patched.spec.nodes["pick"].prompt == "Classify the question.\n\nquestion: {{question}}"


def test_cli_export(server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _spec(tmp_path, DECOMPOSE, server.base_url)
    out = tmp_path / "exported"
    assert main(["export", str(tmp_path / "spec.flow"), "--to", "dspy", "-o", str(out)]) == 0
    assert (out / "program.py").exists() and (out / "program.json").exists()
    assert "DecomposeProgram" in (out / "program.py").read_text()


def test_subflows_are_refused(tmp_path: Path) -> None:
    compiled = flowc.compile(ROOT / "tests" / "golden" / "subflow.flow")
    assert main(["export", str(ROOT / "tests" / "golden" / "subflow.flow"), "--to", "dspy", "-o", str(tmp_path)]) == 1
    with pytest.raises(flowc.errors.FlowcError) as e:
        export_dspy(compiled, tmp_path / "x")
    assert e.value.code == "export-unsupported"
