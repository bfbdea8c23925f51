"""Constrained decoding: the grammar derived from a node's outputs, who gets it, and how it travels."""

from __future__ import annotations

import asyncio
import re

import pytest

import flowc
from flowc.errors import OutputParseError
from flowc.runtime.client import ModelClient
from flowc.runtime.constraints import reply_constraint, wants_constraint
from flowc.runtime.executor import Executor
from flowc.runtime.fakes import ScriptedLM
from flowc.runtime.lm import LMRequest, chat
from flowc.runtime.local_provider import chat_body
from flowc.runtime.outputs import OutputSpec, parse_outputs
from flowc.runtime.policy import ModelPolicy
from flowc.spec.types import ANY, BOOL, FLOAT, INT, STR, EnumT, ListT, OptionalT, RecordT
from flowc.testing.fake_server import FakeOpenAIServer

pytestmark = pytest.mark.timeout(60)

YES_NO = EnumT(("yes", "no", "maybe"))


def _grammar(ports: dict, fmt: str) -> str | None:
    c = reply_constraint(OutputSpec(ports, fmt))
    return None if c is None else c["grammar"]


def test_text_enum_is_held_to_its_values() -> None:
    assert _grammar({"answer": YES_NO}, "text") == 'root ::= ("yes" | "no" | "maybe")\n'


def test_free_text_is_left_unconstrained() -> None:
    assert reply_constraint(OutputSpec({"answer": STR}, "text")) is None


def test_text_numbers_bools_and_lists() -> None:
    assert _grammar({"n": INT}, "text") == 'root ::= "-"? [0-9]{1,15}\n'
    assert _grammar({"ok": OptionalT(BOOL)}, "text") == 'root ::= ("yes" | "no")\n'
    assert _grammar({"qs": ListT(STR)}, "text") == 'root ::= [^\\n]+ ("\\n" [^\\n]+)*\n'


def test_tagged_ports_in_order_and_optional_ports_may_be_left_out() -> None:
    g = _grammar({"route": EnumT(("a", "b"), route=True), "why": OptionalT(STR), "qs": ListT(STR)}, "tagged")
    assert g == (
        'root ::= "<route>" ("a" | "b") "</route>" "\\n" '
        '("<why>" [^<]* "</why>" "\\n")? '
        '"<qs>" ("\\n" [^<\\n]+)* "\\n"? "</qs>" "\\n"\n'
    )


def test_values_are_escaped_as_gbnf_literals() -> None:
    g = _grammar({"v": EnumT(('say "hi"', "back\\slash"))}, "text")
    assert g == 'root ::= ("say \\"hi\\"" | "back\\\\slash")\n'


def test_json_format_gets_a_schema() -> None:
    c = reply_constraint(OutputSpec({"label": YES_NO, "score": OptionalT(INT), "r": RecordT((("k", STR),))}, "json"))
    assert c == {
        "json_schema": {
            "type": "object",
            "properties": {
                "label": {"enum": ["yes", "no", "maybe"]},
                "score": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
                "r": {"type": "object", "properties": {"k": {"type": "string"}}, "required": ["k"]},
            },
            "required": ["label", "r"],
        }
    }


def test_replies_the_grammar_allows_parse() -> None:
    """What the grammar lets through is what the reader accepts (a hand-written sample per shape)."""
    tagged = OutputSpec({"route": EnumT(("a", "b"), route=True), "why": OptionalT(STR), "qs": ListT(STR)}, "tagged")
    assert parse_outputs("<route>b</route>\n<qs>\nx y\nz\n</qs>\n", tagged, node="n") == {
        "route": "b",
        "why": None,
        "qs": ["x y", "z"],
    }
    assert parse_outputs("<route>a</route>\n<qs></qs>\n", tagged, node="n")["qs"] == []
    assert parse_outputs('"maybe"', OutputSpec({"a": YES_NO}, "text"), node="n") == {"a": "maybe"}


def test_who_gets_a_constraint() -> None:
    assert wants_constraint("local/smollm2", None)
    assert not wants_constraint("openai/gpt-4o-mini", None)
    assert wants_constraint("openai/served", True)
    assert not wants_constraint("local/smollm2", False)
    from flowc.runtime.constraints import constraint_kind

    assert constraint_kind("local/smollm2", None) == "grammar"
    assert constraint_kind("openai/gpt-4o-mini", None) == "schema"  # structured outputs, per litellm's model map
    assert constraint_kind("openai/gpt-4o-mini", None, "https://api.openai.com/v1") == "schema"
    assert constraint_kind("openai/gpt-4o-mini", None, "http://127.0.0.1:8000/v1") is None  # a self-hosted server
    assert constraint_kind("openai/served", True, "http://127.0.0.1:8000/v1") == "grammar"
    assert constraint_kind("openai/some-unknown-model", None) is None
    assert constraint_kind("openai/gpt-4o-mini", False) is None


SPEC = """
pipeline judge {
  input question: str
  output answer: enum[yes, no, maybe] <- solve.answer
  model m = "MODEL" { CONSTRAINED }
  node solve: llm {
    prompt: "Question: {{question}}"
    question <- question
    output answer: enum[yes, no, maybe]
  }
}
"""


def _requests(model: str, constrained: str = "", reply: str = "yes") -> list[LMRequest]:
    compiled = flowc.compile(SPEC.replace("MODEL", model).replace("CONSTRAINED", constrained))
    lm = ScriptedLM([reply])
    result = asyncio.run(Executor(compiled, lm=lm).run({"question": "q?"}))
    assert result.status == "ok" and result.outputs == {"answer": "yes"}
    return lm.calls


def test_executor_constrains_local_models_and_declared_ones_only() -> None:
    (local,) = _requests("local/smollm2")
    assert local.constraint == {"grammar": 'root ::= ("yes" | "no" | "maybe")\n'}
    (remote,) = _requests("openai/some-self-hosted-model")  # no structured outputs known
    assert remote.constraint is None
    (declared,) = _requests("openai/served", 'constrained: true\n    api_base: "http://127.0.0.1:9/v1"')
    assert declared.constraint == local.constraint
    (off,) = _requests("local/smollm2", "constrained: false")
    assert off.constraint is None


def test_a_hosted_api_with_structured_outputs_gets_the_outputs_json_schema() -> None:
    (call,) = _requests("openai/gpt-4o-mini", reply='{"answer": "yes"}')
    fmt = call.constraint["response_format"] if call.constraint else {}
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "solve" and fmt["json_schema"]["strict"]
    assert fmt["json_schema"]["schema"] == {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no", "maybe"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    assert "JSON object" in call.messages[-1].content  # the node asks for the JSON it parses
    (off,) = _requests("openai/gpt-4o-mini", "constrained: false")
    assert off.constraint is None
    (declared,) = _requests("anthropic/claude-3-5-haiku-latest", "constrained: true", reply='{"answer": "yes"}')
    assert declared.constraint is not None and "response_format" in declared.constraint


def test_strict_schemas_require_every_key_and_name_optional_ones_nullable() -> None:
    from flowc.runtime.constraints import response_format

    ports = {"label": YES_NO, "note": OptionalT(STR), "r": RecordT((("k", INT),)), "xs": ListT(FLOAT)}
    fmt = response_format(OutputSpec(ports, "json"), "judge node")["response_format"]["json_schema"]
    schema = fmt["schema"]
    assert fmt["name"] == "judge_node" and fmt["strict"] is True
    assert schema["required"] == ["label", "note", "r", "xs"] and schema["additionalProperties"] is False
    assert schema["properties"]["note"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert schema["properties"]["r"]["additionalProperties"] is False
    loose = response_format(OutputSpec({"x": ANY}, "json"), "n")["response_format"]["json_schema"]
    assert loose["strict"] is False  # an untyped value cannot be expressed in strict mode


def test_response_format_reaches_the_server_on_both_transports() -> None:
    from flowc.runtime.constraints import response_format

    constraint = response_format(OutputSpec({"label": YES_NO}, "json"), "n")
    with FakeOpenAIServer() as srv:
        for transport in ("native", "litellm"):
            req = LMRequest(model="openai/served", messages=chat(None, "q"), constraint=constraint)
            lm = ModelClient({"openai/served": ModelPolicy(api_base=srv.base_url, transport=transport)})
            asyncio.run(lm.complete(req))
        native, via_litellm = srv.hits_log
    assert native.body["response_format"] == via_litellm.body["response_format"] == constraint["response_format"]


def test_the_constraint_is_part_of_the_cache_key_only_when_present() -> None:
    plain = LMRequest(model="local/smollm2", messages=chat(None, "q"))
    assert "constraint" not in plain.canonical()  # keys recorded before constraints existed still match
    held = plain.model_copy(update={"constraint": {"grammar": 'root ::= "a"'}})
    assert held.key() != plain.key()


def test_the_grammar_reaches_an_openai_compatible_server_in_the_body() -> None:
    with FakeOpenAIServer() as srv:
        req = LMRequest(model="openai/served", messages=chat(None, "q"), constraint={"grammar": 'root ::= "a"'})
        asyncio.run(ModelClient({"openai/served": ModelPolicy(api_base=srv.base_url)}).complete(req))
        (hit,) = srv.hits_log
    assert hit.body["grammar"] == 'root ::= "a"'


def test_the_embedded_provider_forwards_grammar_and_schema_to_llama_cpp() -> None:
    body = chat_body(
        [{"role": "user", "content": "q"}],
        {"max_tokens": 4, "extra_body": {"grammar": "g", "json_schema": {"enum": ["a"]}, "other": 1}},
    )
    assert body == {
        "messages": [{"role": "user", "content": "q"}],
        "max_tokens": 4,
        "grammar": "g",
        "json_schema": {"enum": ["a"]},
    }


@pytest.mark.integration
@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    ("ports", "fmt"),
    [
        ({"answer": YES_NO}, "text"),
        ({"n": INT}, "text"),
        ({"route": EnumT(("search", "answer"), route=True), "why": OptionalT(STR), "qs": ListT(STR)}, "tagged"),
        ({"label": YES_NO, "score": INT}, "json"),
    ],
)
def test_the_embedded_model_replies_within_the_grammar(ports: dict, fmt: str) -> None:
    """llama.cpp accepts every kind of constraint flowc builds, and the reply parses although the
    prompt asks for prose. (A free `str` value can still run past max_tokens; the budget here
    leaves room for SmolLM2's greedy answer.)"""
    spec = OutputSpec(ports, fmt)
    req = LMRequest(
        model="local/smollm2",
        messages=chat(None, "Who wrote Hamlet? Answer in prose, then explain why."),
        max_tokens=96,
        constraint=reply_constraint(spec),
    )
    reply = asyncio.run(ModelClient().complete(req))
    values = parse_outputs(reply.text, spec, node="n")
    assert set(values) == set(ports)
    if fmt == "tagged":
        assert re.match(r"<route>(search|answer)</route>", reply.text)


def test_a_tag_that_only_repeats_the_placeholder_is_missing() -> None:
    """Free text is shown as <name>...</name> in the instructions; a small model under the grammar
    may copy the dots. That is no answer: optional outputs become None (so `a ?? b` moves on) and a
    required one is a parse error (so the executor asks for a repair)."""
    spec = OutputSpec({"next": EnumT(("search", "generate"), route=True), "query": OptionalT(STR)}, "tagged")
    assert parse_outputs("<next>search</next>\n<query>...</query>\n", spec, node="n") == {
        "next": "search",
        "query": None,
    }
    assert parse_outputs("<next>search</next><query>Ed Wood cast</query>", spec, node="n")["query"] == "Ed Wood cast"
    with pytest.raises(OutputParseError, match="'a' is missing"):
        parse_outputs("<a>…</a><b>3</b>", OutputSpec({"a": STR, "b": INT}, "tagged"), node="n")
