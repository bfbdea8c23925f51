"""OpenTelemetry spans: one per run, per node firing and per LM call, nested in that order."""

import asyncio

import pytest

import flowc
from flowc.runtime.executor import Executor
from flowc.runtime.fakes import ScriptedLM

otel = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402

SPEC = """pipeline two {
  input question: str
  output answer: str <- b.answer
  model m = "fake/m"
  node a: llm {
    prompt: "{{question}}"
    question <- question
    output notes: str
  }
  node b: llm {
    prompt: "{{notes}}"
    notes <- a.notes
    output answer: str
  }
}"""

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="module", autouse=True)
def provider() -> None:
    tp = otel.TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    trace.set_tracer_provider(tp)


def test_spans_per_run_node_and_call() -> None:
    _EXPORTER.clear()
    result = asyncio.run(Executor(flowc.compile(SPEC), lm=ScriptedLM(["n", "yes"])).run({"question": "q"}))
    assert result.status == "ok"
    spans = _EXPORTER.get_finished_spans()
    names = [s.name for s in spans]
    assert names.count("flowc.run") == 1
    assert names.count("flowc.node") == 2
    assert names.count("flowc.lm_call") == 2
    run = next(s for s in spans if s.name == "flowc.run")
    assert run.attributes["flowc.status"] == "ok"
    nodes = [s for s in spans if s.name == "flowc.node"]
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in nodes)
    calls = [s for s in spans if s.name == "flowc.lm_call"]
    node_ids = {s.context.span_id for s in nodes}
    assert all(c.parent is not None and c.parent.span_id in node_ids for c in calls)
    assert {c.attributes["flowc.node"] for c in calls} == {"a", "b"}
