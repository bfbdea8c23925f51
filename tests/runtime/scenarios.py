"""A catalog of tiny pipelines run under a ScriptedLM (STYLE.md L11; Haystack's PipelineRunData).

Each `Scenario` is an inline spec plus: the inputs, the ScriptedLM script, the expected outputs, the
expected path (the nodes in the order their steps completed) and the expected LM call log (which
node asked, in order, and key parts of its last message). `test_scenarios.py` runs every one.

The catalog covers every node kind (llm, retrieve, tool, subflow, map over each) and every topology
the executor schedules: a linear chain, fan-out/fan-in, loops closed by a router (continue, exit,
exhaustion, a `while` condition) and by a plain back edge, forward routes with gated targets (one
enabled by a node downstream of the router, as in jade_workflow's rewrite -> retrieve), `a ?? b`
fallbacks, `all x` histories, optional and typed outputs (int, list[str], enum, record, route, json
format) with a repair round and an unrecoverable parse error.

Specs that need a corpus or a subflow refer to `$WIKI` and `$SPECS`, replaced by absolute paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowc.runtime.config import RunConfig
from flowc.runtime.fakes import ScriptItem
from flowc.runtime.lm import LMRequest

ROOT = Path(__file__).resolve().parents[2]
WIKI = ROOT / "pipelines" / "data" / "tiny_wiki.jsonl"
SPECS = Path(__file__).resolve().parent / "specs"

# A path entry is a node name, or a frozenset of nodes that run concurrently (any order among them).
PathItem = str | frozenset[str]


@dataclass(frozen=True)
class Call:
    """One expected LM call: the node that made it and texts its last message must contain."""

    node: str
    has: tuple[str, ...] = ()


@dataclass(frozen=True)
class Scenario:
    name: str
    spec: str
    inputs: Mapping[str, Any]
    script: tuple[ScriptItem, ...]
    path: tuple[PathItem, ...]
    calls: tuple[Call, ...]
    outputs: Mapping[str, Any] | None = None  # None: the run must fail (see error_code)
    status: str = "ok"
    error_code: str | None = None
    error_has: tuple[str, ...] = ()
    # Concurrent nodes call in any order: then calls are compared per node (each node's own
    # calls still in order) instead of as one sequence.
    calls_ordered: bool = True
    notes: Mapping[str, str] = field(default_factory=dict)  # node -> text its step's note contains
    tools: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    config: RunConfig | None = None
    check: Callable[[Any], None] | None = None  # extra assertions on the RunResult
    step_fails: bool = True  # an error run: its last step is the one that failed

    @property
    def source(self) -> str:
        return resolve(self.spec)


def resolve(spec: str) -> str:
    """The spec text with `$WIKI` and `$SPECS` replaced by absolute paths."""
    return spec.replace("$WIKI", str(WIKI)).replace("$SPECS", str(SPECS))


def by_node(answers: Mapping[str, str | list[str]]) -> Callable[[LMRequest], str]:
    """A script item answering by the asking node, for nodes that run concurrently (their order
    of calls is not fixed). A list answers that node's successive calls in order."""
    used: dict[str, int] = {}

    def answer(req: LMRequest) -> str:
        a = answers[req.node or ""]
        if isinstance(a, str):
            return a
        i = used.get(req.node or "", 0)
        used[req.node or ""] = i + 1
        return a[i]

    return answer


def last_line(req: LMRequest) -> str:
    """Answers with the last line of the prompt (map branches answer their own item)."""
    return "re: " + req.messages[-1].content.strip().splitlines()[-1]


# -- tools -------------------------------------------------------------------------------------------


def add(a: int, b: int) -> int:
    return a + b


async def divmod_tool(a: int, b: int) -> dict[str, int]:
    await asyncio.sleep(0)
    return {"quotient": a // b, "remainder": a % b}


def titles(docs: list[dict[str, Any]]) -> list[str]:
    return [d["title"] for d in docs]


def first_title(docs: list[dict[str, Any]]) -> str:
    return str(docs[0]["title"])


def broken(a: int, b: int) -> int:
    raise ValueError(f"cannot combine {a} and {b}")


class Kaput(RuntimeError):
    """An exception no flowc layer expects (a bug in a client)."""


TOOLS: dict[str, Callable[..., Any]] = {"add": add, "divmod": divmod_tool, "titles": titles, "first_title": first_title}

# -- specs -------------------------------------------------------------------------------------------

LINEAR = """
pipeline linear {
  input question: str
  output answer: str <- answer.answer
  model m = "openai/fake"
  node rewrite: llm {
    system: "You rewrite questions."
    prompt: "Rewrite: {{question}}"
    question <- question
    output query: str
  }
  node answer: llm {
    prompt: "Answer the query: {{query}}"
    query <- rewrite.query
    output answer: str
  }
}
"""

RAG = """
pipeline rag {
  input question: str
  output answer: str <- read.answer
  output titles: list[str] <- names.titles
  model m = "openai/fake"
  corpus wiki = "$WIKI"
  node rewrite: llm {
    prompt: "Search query for: {{question}}"
    question <- question
    output query: str
  }
  node search: retrieve {
    corpus: wiki
    method: bm25
    k: 2
    query <- rewrite.query
  }
  node names: tool {
    function: titles
    docs <- search.docs
    output titles: list[str]
  }
  node read: llm {
    prompt: \"\"\"
      Passages:
      {{docs}}
      Question: {{question}}
      \"\"\"
    question <- question
    docs <- search.docs
    output answer: str
  }
}
"""

FAN = """
pipeline fan {
  input question: str
  output answer: str <- join.answer
  output pro: str <- pro.text
  model m = "openai/fake"
  node pro: llm {
    prompt: "Argue for: {{question}}"
    question <- question
    output text: str
  }
  node con: llm {
    prompt: "Argue against: {{question}}"
    question <- question
    output text: str
  }
  node join: llm {
    prompt: "For: {{pro}} Against: {{con}} Decide: {{question}}"
    question <- question
    pro <- pro.text
    con <- con.text
    output answer: str
  }
}
"""

# A router closes the loop: review sends the draft back (continue) or on to publish (exit).
REVIEW = """
pipeline review_loop {
  input topic: str
  output final: str <- publish.final
  output drafts: list[str] <- all draft.text
  model m = "openai/fake"
  node draft: llm {
    prompt: "Draft about {{topic}}. Notes: {{notes}}"
    topic <- topic
    notes <- review.notes ?? "none"
    output text: str
  }
  node review: llm {
    prompt: "Review: {{text}}"
    format: tagged
    fallback: publish
    text <- draft.text
    output next: route[draft, publish]
    output score: int
    output notes: str?
  }
  node publish: llm {
    prompt: "Polish: {{text}}"
    text <- draft.text
    output final: str
  }
  loop revise: review -> draft max 2$WHILE
}
"""

REVIEW_NO_NOTES = (
    REVIEW.replace("$WHILE", "").replace('    notes <- review.notes ?? "none"\n', "").replace(" Notes: {{notes}}", "")
)

# A plain back edge (no router) with a `while` condition.
REFINE = """
pipeline refine {
  input topic: str
  output text: str <- draft.text
  output scores: list[int] <- all critic.score
  model m = "openai/fake"
  node draft: llm {
    prompt: "Write about {{topic}}. Feedback: {{feedback}}"
    topic <- topic
    feedback <- critic.feedback ?? "none"
    output text: str
  }
  node critic: llm {
    prompt: "Score: {{text}}"
    format: tagged
    text <- draft.text
    output score: int
    output feedback: str
  }
  loop polish: critic -> draft max 2 while critic.score < 8
}
"""

SELF_LOOP = """
pipeline grow {
  input seed: str
  output last: str <- grow.text
  output stages: list[str] <- all grow.text
  model m = "openai/fake"
  node grow: llm {
    prompt: "Grow from {{prev}}"
    prev <- grow.text ?? seed
    output text: str
  }
  loop again: grow -> grow max 5 while grow.text != "stop"
}
"""

# Forward routes: rewrite and search are gated by plan; search is also enabled by rewrite, a node
# downstream of the router (jade_workflow's rewrite -> retrieve); answer ?? direct picks the branch.
ROUTE = """
pipeline route {
  input question: str
  output answer: str <- answer.answer ?? direct.answer
  model m = "openai/fake"
  node plan: llm {
    prompt: "Plan for: {{question}}"
    format: tagged
    fallback: search
    question <- question
    output next: route[rewrite, search, direct]
  }
  node rewrite: llm {
    prompt: "Rewrite: {{question}}"
    question <- question
    output query: str
  }
  node search: tool {
    function: lookup
    query <- rewrite.query ?? question
    output hits: list[str]
  }
  node answer: llm {
    prompt: "Hits: {{hits}} Question: {{question}}"
    question <- question
    hits <- search.hits
    output answer: str
  }
  node direct: llm {
    prompt: "Answer directly: {{question}}"
    question <- question
    output answer: str
  }
}
"""

NO_FALLBACK = """
pipeline pick {
  input question: str
  output answer: str <- yes.a ?? no.a
  model m = "openai/fake"
  node plan: llm {
    prompt: "Yes or no path for {{question}}"
    question <- question
    output next: route[yes, no]
  }
  node yes: llm {
    prompt: "Yes: {{question}}"
    question <- question
    output a: str
  }
  node no: llm {
    prompt: "No: {{question}}"
    question <- question
    output a: str
  }
}
"""

# An optional output that is absent becomes None, and `??` skips a None to the next alternative.
OPTIONAL = """
pipeline optional {
  input question: str
  output answer: str <- final.answer
  output hint: str? <- hinter.hint
  output never: str? <- hinter.missing
  model m = "openai/fake"
  node hinter: llm {
    prompt: "Any hint for {{question}}?"
    format: tagged
    question <- question
    output hint: str?
    output missing: str?
    output mood: enum[calm, tense]
  }
  node final: llm {
    prompt: "Hint: {{hint}} Question: {{question}}"
    question <- question
    hint <- hinter.hint ?? "no hint"
    output answer: str
  }
}
"""

TYPED = """
pipeline typed {
  input text: str
  output n: int <- extract.n
  output tags: list[str] <- extract.tags
  output mood: enum[happy, sad] <- extract.mood
  output who: {name: str, age: int} <- extract.who
  output label: enum[yes, no, maybe] <- judge.label
  model m = "openai/fake"
  node extract: llm {
    prompt: "Read: {{text}}"
    format: tagged
    text <- text
    output n: int
    output tags: list[str]
    output mood: enum[happy, sad]
    output who: {name: str, age: int}
  }
  node judge: llm {
    prompt: "Is {{text}} about {{n}} things?"
    text <- text
    n <- extract.n
    output label: enum[yes, no, maybe]
  }
}
"""

JSON_OUT = """
pipeline json_out {
  input text: str
  output who: {name: str, age: int} <- extract.who
  output ok: bool <- extract.ok
  output score: float <- extract.score
  model m = "openai/fake"
  node extract: llm {
    prompt: "Read: {{text}}"
    format: json
    text <- text
    output who: {name: str, age: int}
    output ok: bool
    output score: float
  }
}
"""

# prep completes, then count's reply cannot be read even after the repair.
PARSE_FAIL = """
pipeline parse_fail {
  input text: str
  output n: int <- count.n
  model m = "openai/fake"
  node prep: llm {
    prompt: "Clean: {{text}}"
    text <- text
    output clean: str
  }
  node count: llm {
    prompt: "How many words in {{clean}}?"
    clean <- prep.clean
    output n: int
  }
}
"""

TOOLS_SPEC = """
pipeline tools {
  input a: int
  input b: int = 4
  output total: int <- add.total
  output q: int <- split.quotient
  output r: int <- split.remainder
  output words: str <- say.text
  model m = "openai/fake"
  node add: tool {
    function: add
    a <- a
    b <- b
    output total: int
  }
  node split: tool {
    function: divmod
    a <- add.total
    b <- 3
    output quotient: int
    output remainder: int
  }
  node say: llm {
    prompt: "Say {{total}} in words"
    total <- add.total
    output text: str
  }
}
"""

TOOL_FAIL = """
pipeline tool_fail {
  input text: str
  output total: int <- combine.total
  model m = "openai/fake"
  node count: llm {
    prompt: "Count {{text}}"
    format: tagged
    text <- text
    output n: int
  }
  node combine: tool {
    function: broken
    a <- count.n
    b <- 1
    output total: int
  }
}
"""

MAPS = """
import "$SPECS/answer_one.flow" as one

pipeline maps {
  input question: str
  output answers: list[str] <- each_llm.answer
  output hits: list[list[Doc]] <- each_search.docs
  output sub_answers: list[str] <- each_flow.answer
  output tops: list[str] <- each_flow.top
  model m = "openai/fake"
  corpus wiki = "$WIKI"
  node split: llm {
    prompt: "Split into parts: {{question}}"
    format: tagged
    question <- question
    output parts: list[str]
  }
  node each_llm: map {
    over <- split.parts
    do: llm {
      prompt: \"\"\"
        Context: {{question}}
        Part: {{part}}
        \"\"\"
      part <- item
      question <- question
      output answer: str
    }
  }
  node each_search: map {
    over <- split.parts
    do: retrieve {
      corpus: wiki
      k: 1
      query <- item
    }
  }
  node each_flow: map {
    over <- split.parts
    max_items: 2
    do: subflow {
      flow: one
      question <- item
    }
  }
}
"""

SUBFLOW = """
import "$SPECS/answer_one.flow" as one

pipeline sub {
  input question: str
  output answer: str <- polish.text
  output top: str <- step.top
  model m = "openai/fake"
  node step: subflow {
    flow: one
    question <- question
  }
  node polish: llm {
    prompt: "Polish: {{answer}}"
    answer <- step.answer
    output text: str
  }
}
"""

HOPS = """
pipeline hops {
  input question: str
  output answer: str <- answer.answer
  output searched: list[str] <- all search.query
  output found: list[list[Doc]] <- all search.docs
  model m = "openai/fake"
  corpus wiki = "$WIKI"
  node search: retrieve {
    corpus: wiki
    k: 2
    skip_seen: true
    query <- plan.query ?? question
  }
  node plan: llm {
    prompt: "Question: {{question}}\\nSearched:\\n{{searched}}\\nPassages:\\n{{docs}}"
    format: tagged
    fallback: answer
    question <- question
    searched <- all search.query
    docs <- search.docs
    output next: route[search, answer]
    output query: str?
  }
  node answer: llm {
    prompt: "Answer: {{question}}"
    question <- question
    output answer: str
  }
  loop research: plan -> search max 5 while not (all search.query contains plan.query ?? question)
}
"""

AGENTIC_RAG = str(ROOT / "pipelines" / "agentic_rag.flow")
JADE = str(ROOT / "pipelines" / "jade_workflow.flow")

PAYPAL = "PayPal Credit, formerly named Bill Me Later"
PRETENDERS = "Extended Play is a 1981 EP released by new wave band Pretenders"


def _maps_check(r: Any) -> None:
    hits = r.outputs["hits"]
    assert [[d["title"] for d in h] for h in hits] == [
        ["PayPal Credit"],
        ["Extended Play (Pretenders EP)"],
        ["Act of Congress (music group)"],
    ]
    # the subflow's model calls are part of the map step's trace (and its tokens)
    flow_step = next(s for s in r.steps if s.node == "each_flow")
    assert [c.node for c in flow_step.lm_calls] == ["answer", "answer"]


def _hops_check(r: Any) -> None:
    first, second = r.outputs["found"]
    # skip_seen: the second search brings the best passages the first did not return
    assert len(first) == len(second) == 2
    assert not {d["id"] for d in first} & {d["id"] for d in second}
    assert [s.outputs["query"] for s in r.steps if s.node == "search"] == r.outputs["searched"]


def _distinct_passages_check(r: Any) -> None:
    searches = [s.outputs["docs"] for s in r.steps if s.node == "search"]
    ids = [d["id"] for docs in searches for d in docs]
    # the third query matches only a passage already returned: nothing new comes back
    assert [len(docs) for docs in searches] == [3, 3, 0] and len(set(ids)) == len(ids)


def _typed_check(r: Any) -> None:
    assert isinstance(r.outputs["n"], int) and isinstance(r.outputs["who"]["age"], int)


def _parse_fail_check(r: Any) -> None:
    prep, count = r.steps
    assert (prep.status, prep.outputs) == ("ok", {"clean": "one two three"})
    assert count.status == "error" and "output-parse-error" in (count.error or "")
    assert [c.response for c in count.lm_calls] == ["several", "quite a few"]
    # the message names the place once, and the repair prompt does not leak it to the model
    assert r.error.count("node 'count'") == 1
    repair = count.lm_calls[1].request["messages"][-1]["content"]
    assert "node 'count'" not in repair and "expected a whole number" in repair


def _kaput_check(r: Any) -> None:
    (step,) = r.steps
    assert step.lm_calls[0].error == "Kaput: the client broke"


# -- the catalog ---------------------------------------------------------------------------------------

SCENARIOS: list[Scenario] = [
    Scenario(
        "linear",
        LINEAR,
        {"question": "capital of France?"},
        ("France capital city", "Paris"),
        path=("rewrite", "answer"),
        calls=(
            Call("rewrite", ("Rewrite: capital of France?",)),
            Call("answer", ("Answer the query: France capital city",)),
        ),
        outputs={"answer": "Paris"},
    ),
    Scenario(
        "linear_llm_retrieve_tool",
        RAG,
        {"question": "What was PayPal Credit called before?"},
        ("PayPal Credit Bill Me Later", "Bill Me Later"),
        path=("rewrite", "search", frozenset({"names", "read"})),
        calls=(
            Call("rewrite", ("Search query for: What was PayPal Credit called before?",)),
            Call("read", (f"[1] PayPal Credit: {PAYPAL}", "Question: What was PayPal Credit called before?")),
        ),
        outputs={"answer": "Bill Me Later", "titles": ["PayPal Credit", "Bill Pullman"]},
        tools=TOOLS,
    ),
    Scenario(
        "fan_out_fan_in",
        FAN,
        {"question": "tabs or spaces?"},
        (by_node({"pro": "tabs are small", "con": "spaces align"}),) * 2 + ("spaces",),
        path=(frozenset({"pro", "con"}), "join"),
        calls=(
            Call("pro", ("Argue for: tabs or spaces?",)),
            Call("con", ("Argue against: tabs or spaces?",)),
            Call("join", ("For: tabs are small Against: spaces align Decide: tabs or spaces?",)),
        ),
        calls_ordered=False,
        outputs={"answer": "spaces", "pro": "tabs are small"},
    ),
    Scenario(
        "loop_router_exits_at_once",
        REVIEW.replace("$WHILE", ""),
        {"topic": "owls"},
        ("owls hoot", "<next>publish</next><score>9</score>", "Owls hoot."),
        path=("draft", "review", "publish"),
        calls=(
            Call("draft", ("Draft about owls. Notes: none",)),
            Call("review", ("Review: owls hoot", "<next>one of: draft, publish</next>")),
            Call("publish", ("Polish: owls hoot",)),
        ),
        outputs={"final": "Owls hoot.", "drafts": ["owls hoot"]},
    ),
    Scenario(
        "loop_router_continues_then_exits",
        REVIEW.replace("$WHILE", ""),
        {"topic": "owls"},
        (
            "owls hoot",
            "<next>draft</next><score>4</score><notes>say when</notes>",
            "owls hoot at night",
            "<next>publish</next><score>8</score>",
            "Owls hoot at night.",
        ),
        path=("draft", "review", "draft", "review", "publish"),
        calls=(
            Call("draft", ("Draft about owls. Notes: none",)),
            Call("review", ("Review: owls hoot",)),
            Call("draft", ("Draft about owls. Notes: say when",)),
            Call("review", ("Review: owls hoot at night",)),
            Call("publish", ("Polish: owls hoot at night",)),
        ),
        outputs={"final": "Owls hoot at night.", "drafts": ["owls hoot", "owls hoot at night"]},
    ),
    Scenario(
        "loop_router_exhausted_takes_fallback",
        REVIEW.replace("$WHILE", ""),
        {"topic": "owls"},
        (
            "d1",
            "<next>draft</next><score>1</score><notes>n1</notes>",
            "d2",
            "<next>draft</next><score>2</score><notes>n2</notes>",
            "d3",
            "<next>draft</next><score>3</score><notes>n3</notes>",
            "D3",
        ),
        path=("draft", "review", "draft", "review", "draft", "review", "publish"),
        calls=(
            Call("draft", ("Notes: none",)),
            Call("review", ("Review: d1",)),
            Call("draft", ("Notes: n1",)),
            Call("review", ("Review: d2",)),
            Call("draft", ("Notes: n2",)),
            Call("review", ("Review: d3",)),
            Call("publish", ("Polish: d3",)),
        ),
        outputs={"final": "D3", "drafts": ["d1", "d2", "d3"]},
        notes={"review": "loop 'revise' is done: publish instead of draft"},
    ),
    Scenario(
        # the condition reads the router's own output of this firing (5 < 8: go round again)
        "loop_router_while_holds",
        REVIEW.replace("$WHILE", " while review.score < 8"),
        {"topic": "owls"},
        (
            "d1",
            "<next>draft</next><score>5</score><notes>more</notes>",
            "d2",
            "<next>publish</next><score>9</score>",
            "D2",
        ),
        path=("draft", "review", "draft", "review", "publish"),
        calls=(
            Call("draft", ("Notes: none",)),
            Call("review", ("Review: d1",)),
            Call("draft", ("Notes: more",)),
            Call("review", ("Review: d2",)),
            Call("publish", ("Polish: d2",)),
        ),
        outputs={"final": "D2", "drafts": ["d1", "d2"]},
    ),
    Scenario(
        # the router asks for another round but the condition no longer holds (9 >= 8)
        "loop_router_while_fails",
        REVIEW.replace("$WHILE", " while review.score < 8"),
        {"topic": "owls"},
        ("d1", "<next>draft</next><score>9</score><notes>more</notes>", "D1"),
        path=("draft", "review", "publish"),
        calls=(Call("draft", ("Notes: none",)), Call("review", ("Review: d1",)), Call("publish", ("Polish: d1",))),
        outputs={"final": "D1", "drafts": ["d1"]},
        notes={"review": "loop 'revise' is done: publish instead of draft"},
    ),
    Scenario(
        # the loop's only back edge is the route itself: draft reads nothing from review
        "loop_router_route_only_back_edge",
        REVIEW_NO_NOTES,
        {"topic": "owls"},
        ("d1", "<next>draft</next><score>1</score>", "d2", "<next>publish</next><score>9</score>", "D2"),
        path=("draft", "review", "draft", "review", "publish"),
        calls=(
            Call("draft", ("Draft about owls.",)),
            Call("review", ("Review: d1",)),
            Call("draft", ("Draft about owls.",)),
            Call("review", ("Review: d2",)),
            Call("publish", ("Polish: d2",)),
        ),
        outputs={"final": "D2", "drafts": ["d1", "d2"]},
    ),
    Scenario(
        "self_loop_until_condition",
        SELF_LOOP,
        {"seed": "acorn"},
        ("sapling", "tree", "stop"),
        path=("grow", "grow", "grow"),
        calls=(
            Call("grow", ("Grow from acorn",)),
            Call("grow", ("Grow from sapling",)),
            Call("grow", ("Grow from tree",)),
        ),
        outputs={"last": "stop", "stages": ["sapling", "tree", "stop"]},
    ),
    Scenario(
        "loop_back_edge_while",
        REFINE,
        {"topic": "bees"},
        (
            "bees buzz",
            "<score>5</score><feedback>add honey</feedback>",
            "bees buzz and make honey",
            "<score>9</score><feedback>good</feedback>",
        ),
        path=("draft", "critic", "draft", "critic"),
        calls=(
            Call("draft", ("Write about bees. Feedback: none",)),
            Call("critic", ("Score: bees buzz", "<score>a whole number</score>")),
            Call("draft", ("Write about bees. Feedback: add honey",)),
            Call("critic", ("Score: bees buzz and make honey",)),
        ),
        outputs={"text": "bees buzz and make honey", "scores": [5, 9]},
    ),
    Scenario(
        "loop_back_edge_max",
        REFINE,
        {"topic": "bees"},
        (
            *("t1", "<score>1</score><feedback>f1</feedback>"),
            *("t2", "<score>2</score><feedback>f2</feedback>"),
            *("t3", "<score>3</score><feedback>f3</feedback>"),
        ),
        path=("draft", "critic") * 3,
        calls=(
            Call("draft", ("Feedback: none",)),
            Call("critic", ("Score: t1",)),
            Call("draft", ("Feedback: f1",)),
            Call("critic", ("Score: t2",)),
            Call("draft", ("Feedback: f2",)),
            Call("critic", ("Score: t3",)),
        ),
        outputs={"text": "t3", "scores": [1, 2, 3]},
    ),
    Scenario(
        # rewrite is chosen; search (also a route target) runs because rewrite, downstream of the
        # router, sends it a value; direct never runs
        "route_enabled_downstream",
        ROUTE,
        {"question": "Who wrote Dune?"},
        ("<next>rewrite</next>", "Dune novel author", "Frank Herbert"),
        path=("plan", "rewrite", "search", "answer"),
        calls=(
            Call("plan", ("Plan for: Who wrote Dune?", "<next>one of: rewrite, search, direct</next>")),
            Call("rewrite", ("Rewrite: Who wrote Dune?",)),
            Call("answer", ("Hits: - hit for Dune novel author Question: Who wrote Dune?",)),
        ),
        outputs={"answer": "Frank Herbert"},
        tools={"lookup": lambda query: [f"hit for {query}"]},
    ),
    Scenario(
        # search is chosen directly: its `rewrite.query ?? question` waits for the run to go quiet
        # (rewrite is gated and never runs), then takes the question
        "route_direct_target_coalesce",
        ROUTE,
        {"question": "Who wrote Dune?"},
        ("<next>search</next>", "Frank Herbert"),
        path=("plan", "search", "answer"),
        calls=(Call("plan", ("Plan for: Who wrote Dune?",)), Call("answer", ("Hits: - hit for Who wrote Dune?",))),
        outputs={"answer": "Frank Herbert"},
        tools={"lookup": lambda query: [f"hit for {query}"]},
    ),
    Scenario(
        "route_other_branch",
        ROUTE,
        {"question": "2+2?"},
        ("I think <next>direct</next>", "4"),
        path=("plan", "direct"),
        calls=(Call("plan", ("Plan for: 2+2?",)), Call("direct", ("Answer directly: 2+2?",))),
        outputs={"answer": "4"},
        tools={"lookup": lambda query: [f"hit for {query}"]},
    ),
    Scenario(
        "route_invalid_takes_fallback",
        ROUTE,
        {"question": "Who wrote Dune?"},
        ("<next>ask a friend</next>", "Frank Herbert"),
        path=("plan", "search", "answer"),
        calls=(Call("plan", ("Plan for: Who wrote Dune?",)), Call("answer", ("hit for Who wrote Dune?",))),
        outputs={"answer": "Frank Herbert"},
        notes={"plan": "took fallback 'search'"},
        tools={"lookup": lambda query: [f"hit for {query}"]},
    ),
    Scenario(
        "route_lenient_match",
        NO_FALLBACK,
        {"question": "Is it?"},
        ("I'd say **No**.", "nope"),
        path=("plan", "no"),
        calls=(Call("plan", ("Yes or no path for Is it?", "Reply with one of: yes, no.")), Call("no", ("No: Is it?",))),
        outputs={"answer": "nope"},
    ),
    Scenario(
        "route_invalid_without_fallback",
        NO_FALLBACK,
        {"question": "Is it?"},
        ("perhaps",),
        path=("plan",),
        calls=(Call("plan", ("Yes or no path for Is it?",)),),
        status="error",
        error_code="route-invalid-choice",
        error_has=("node 'plan'", "outside yes, no"),
    ),
    Scenario(
        "optional_outputs_and_coalesce",
        OPTIONAL,
        {"question": "Why is the sky blue?"},
        ("<mood>Calm</mood>", "Rayleigh scattering"),
        path=("hinter", "final"),
        calls=(
            Call("hinter", ("Any hint for Why is the sky blue?", "<hint>...</hint>")),
            Call("final", ("Hint: no hint Question: Why is the sky blue?",)),
        ),
        outputs={"answer": "Rayleigh scattering", "hint": None, "never": None},
    ),
    Scenario(
        "optional_output_present",
        OPTIONAL,
        {"question": "Why is the sky blue?"},
        ("<hint>think of light</hint><mood>tense</mood>", "scattering"),
        path=("hinter", "final"),
        calls=(Call("hinter", ()), Call("final", ("Hint: think of light Question",))),
        outputs={"answer": "scattering", "hint": "think of light", "never": None},
    ),
    Scenario(
        "typed_outputs",
        TYPED,
        {"text": "Ann, 7, has a cat and a dog"},
        (
            '<n>about 2</n><tags>- cat\n- dog</tags><mood>"Happy".</mood><who>{"name": "Ann", "age": "7"}</who>',
            "Yes.",
        ),
        path=("extract", "judge"),
        calls=(
            Call(
                "extract",
                (
                    "Read: Ann, 7, has a cat and a dog",
                    "<n>a whole number</n>",
                    "<tags>a list of texts, one per line</tags>",
                    "<mood>one of: happy, sad</mood>",
                    "<who>a JSON object with name, age</who>",
                ),
            ),
            Call("judge", ("Is Ann, 7, has a cat and a dog about 2 things?", "Reply with one of: yes, no, maybe.")),
        ),
        outputs={"n": 2, "tags": ["cat", "dog"], "mood": "happy", "who": {"name": "Ann", "age": 7}, "label": "yes"},
        check=_typed_check,
    ),
    Scenario(
        "typed_outputs_repair_round",
        TYPED,
        {"text": "x"},
        (
            "<n>many</n><tags>a</tags><mood>happy</mood>",  # n unreadable, who missing
            '<n>3</n><tags>a, b</tags><mood>sad</mood><who>{"name": "Bo", "age": 5}</who>',
            "maybe",
        ),
        path=("extract", "judge"),
        calls=(
            Call("extract", ("Read: x",)),
            Call(
                "extract",
                ("Your reply could not be read", "expected a whole number, got 'many'", "'who' is missing"),
            ),
            Call("judge", ("about 3 things",)),
        ),
        outputs={"n": 3, "tags": ["a", "b"], "mood": "sad", "who": {"name": "Bo", "age": 5}, "label": "maybe"},
    ),
    Scenario(
        "json_format",
        JSON_OUT,
        {"text": "Bo is 5"},
        ('Here you go: {"who": {"name": "Bo", "age": 5}, "ok": "yes", "score": "0.75"}',),
        path=("extract",),
        calls=(Call("extract", ("Read: Bo is 5", 'Reply with a JSON object with the keys "who"')),),
        outputs={"who": {"name": "Bo", "age": 5}, "ok": True, "score": 0.75},
    ),
    Scenario(
        "parse_error_after_repair",
        PARSE_FAIL,
        {"text": " one  two three "},
        ("one two three", "several", "quite a few"),
        path=("prep", "count"),
        calls=(
            Call("prep", ("Clean:  one  two three",)),
            Call("count", ("How many words in one two three?",)),
            Call("count", ("Your reply could not be read",)),
        ),
        status="error",
        error_code="output-parse-error",
        error_has=("node 'count'", "model 'openai/fake'", "also after one repair", "quite a few"),
        check=_parse_fail_check,
    ),
    Scenario(
        "parse_error_without_repair",
        PARSE_FAIL,
        {"text": "a b"},
        ("a b", "two-ish?"),
        path=("prep", "count"),
        calls=(Call("prep", ()), Call("count", ("How many words in a b?",))),
        status="error",
        error_code="output-parse-error",
        error_has=("node 'count'", "model 'openai/fake'", "expected a whole number"),
        config=RunConfig(repair=False),
    ),
    Scenario(
        "tools_sync_async_multi_output",
        TOOLS_SPEC,
        {"a": 10},
        ("fourteen",),
        path=("add", frozenset({"split", "say"})),
        calls=(Call("say", ("Say 14 in words",)),),
        outputs={"total": 14, "q": 4, "r": 2, "words": "fourteen"},
        tools=TOOLS,
    ),
    Scenario(
        "tool_fails",
        TOOL_FAIL,
        {"text": "a b c"},
        ("<n>3</n>",),
        path=("count", "combine"),
        calls=(Call("count", ("Count a b c",)),),
        status="error",
        error_code="tool-failed",
        error_has=("node 'combine'", "tool 'broken' raised ValueError: cannot combine 3 and 1"),
        tools={"broken": broken},
    ),
    Scenario(
        "tool_not_registered",
        TOOL_FAIL,
        {"text": "a b c"},
        ("<n>3</n>",),
        path=("count", "combine"),
        calls=(Call("count", ()),),
        status="error",
        error_code="tool-not-registered",
        error_has=("node 'combine'", "no tool named 'broken'"),
    ),
    Scenario(
        "map_over_llm_retrieve_subflow",
        MAPS,
        {"question": "PayPal, Pretenders, Act of Congress"},
        (
            "<parts>PayPal Credit Bill Me Later\nPretenders Extended Play EP\nAct of Congress Birmingham</parts>",
            *(last_line,) * 5,  # three llm branches, two subflow answers (max_items: 2)
        ),
        path=("split", frozenset({"each_llm", "each_search", "each_flow"})),
        calls=(
            Call("split", ("Split into parts: PayPal, Pretenders, Act of Congress", "<parts>a list of texts")),
            Call("each_llm", ("Context: PayPal, Pretenders, Act of Congress", "Part: PayPal Credit Bill Me Later")),
            Call("each_llm", ("Part: Pretenders Extended Play EP",)),
            Call("each_llm", ("Part: Act of Congress Birmingham",)),
            Call("answer", (f"[1] PayPal Credit: {PAYPAL}", "Question: PayPal Credit Bill Me Later")),
            Call("answer", (PRETENDERS, "Question: Pretenders Extended Play EP")),
        ),
        calls_ordered=False,
        outputs={
            "answers": [
                "re: Part: PayPal Credit Bill Me Later",
                "re: Part: Pretenders Extended Play EP",
                "re: Part: Act of Congress Birmingham",
            ],
            "sub_answers": ["re: Question: PayPal Credit Bill Me Later", "re: Question: Pretenders Extended Play EP"],
            "tops": ["PayPal Credit", "Extended Play (Pretenders EP)"],
        },
        tools=TOOLS,
        check=_maps_check,
    ),
    Scenario(
        # an empty list is a valid answer (no parts): every map runs zero branches
        "map_over_empty_list",
        MAPS,
        {"question": "nothing to split"},
        ("<parts></parts>",),
        path=("split", frozenset({"each_llm", "each_search", "each_flow"})),
        calls=(Call("split", ("Split into parts: nothing to split",)),),
        outputs={"answers": [], "hits": [], "sub_answers": [], "tops": []},
        tools=TOOLS,
    ),
    Scenario(
        "subflow_node",
        SUBFLOW,
        {"question": "Pretenders Extended Play EP"},
        ("A 1981 EP", "A 1981 EP by Pretenders."),
        path=("step", "polish"),
        calls=(
            Call("answer", (PRETENDERS, "Question: Pretenders Extended Play EP")),
            Call("polish", ("Polish: A 1981 EP",)),
        ),
        outputs={"answer": "A 1981 EP by Pretenders.", "top": "Extended Play (Pretenders EP)"},
        tools=TOOLS,
    ),
    Scenario(
        # the subflow's model call fails (its script is empty): the error names the outer node
        # and keeps the inner error's code
        "subflow_fails",
        SUBFLOW,
        {"question": "Pretenders Extended Play EP"},
        (),
        path=("step",),
        calls=(Call("answer", ("Question: Pretenders Extended Play EP",)),),
        status="error",
        error_code="lm-script-exhausted",
        error_has=("node 'step'", "subflow 'one' failed", "ScriptedLM was asked for answer #1"),
        tools=TOOLS,
    ),
    Scenario(
        "unexpected_client_exception",
        LINEAR,
        {"question": "q"},
        (Kaput("the client broke"),),
        path=("rewrite",),
        calls=(Call("rewrite", ("Rewrite: q",)),),
        status="error",
        error_code="node-failed",
        error_has=("node 'rewrite'", "Kaput: the client broke"),
        check=_kaput_check,
    ),
    Scenario(
        "script_exhausted",
        LINEAR,
        {"question": "q"},
        ("only one",),
        path=("rewrite", "answer"),
        calls=(Call("rewrite", ()), Call("answer", ("Answer the query: only one",))),
        status="error",
        error_code="lm-script-exhausted",
        error_has=("answer #2",),
    ),
    Scenario(
        # a retrieve node outputs the query it ran; the loop refuses a query already run (the
        # router's fallback takes over) and `skip_seen` keeps the passages of each search new
        "loop_stops_on_a_repeated_query",
        HOPS,
        {"question": "What was PayPal Credit called before?"},
        (
            "<next>search</next><query>PayPal Credit Bill Me Later</query>",
            "<next>search</next><query>PayPal Credit Bill Me Later</query>",
            "Bill Me Later",
        ),
        path=("search", "plan", "search", "plan", "answer"),
        calls=(
            Call("plan", ("Searched:\n- What was PayPal Credit called before?\nPassages:\n[1] PayPal Credit",)),
            Call("plan", ("Searched:\n- What was PayPal Credit called before?\n- PayPal Credit Bill Me Later\n",)),
            Call("answer", ()),
        ),
        outputs={
            "answer": "Bill Me Later",
            "searched": ["What was PayPal Credit called before?", "PayPal Credit Bill Me Later"],
        },
        notes={"plan": "loop 'research' is done: answer instead of search"},
        check=_hops_check,
    ),
    # -- the shipped pipelines -----------------------------------------------------------------------
    Scenario(
        # the planner asks for two more hops, then repeats a query: the loop does not run it again,
        # generate takes over; every search brought passages the earlier ones had not
        "agentic_rag_stops_on_a_repeated_query",
        AGENTIC_RAG,
        {"question": "What was PayPal Credit called before?"},
        (
            *("e1", "<next>search</next><query>Bill Me Later</query>"),
            *("e2", "<next>search</next><query>Comenity Capital Bank</query>"),
            *("e3", "<next>search</next><query>Bill Me Later</query>"),
            "Bill Me Later",
        ),
        path=("search", "reflect", "plan") * 3 + ("generate",),
        calls=(
            Call("reflect", (PAYPAL, "Search: What was PayPal Credit called before?")),
            Call("plan", ("Facts found so far:\n- e1\nSearches already run:\n- What was PayPal Credit",)),
            Call("reflect", ("Search: Bill Me Later",)),
            Call("plan", ("- e1\n- e2\n", "- What was PayPal Credit called before?\n- Bill Me Later")),
            Call("reflect", ("Search: Comenity Capital Bank",)),
            Call("plan", ("- e1\n- e2\n- e3\n", "- Bill Me Later\n- Comenity Capital Bank")),
            Call(
                "generate",
                (f"[1] PayPal Credit: {PAYPAL}", "[4] Bill Pullman", "[6] Sun Xing", "Facts:\n- e1\n- e2\n- e3"),
            ),
        ),
        outputs={
            "answer": "Bill Me Later",
            "evidence": ["e1", "e2", "e3"],
            "searched": ["What was PayPal Credit called before?", "Bill Me Later", "Comenity Capital Bank"],
        },
        notes={"plan": "loop 'research' is done: generate instead of search"},
        check=_distinct_passages_check,
    ),
    Scenario(
        # the evidence answers the question: the planner stops after the first search
        "agentic_rag_stops_early",
        AGENTIC_RAG,
        {"question": "What was PayPal Credit called before?"},
        ("e1", "<next>generate</next>", "Bill Me Later"),
        path=("search", "reflect", "plan", "generate"),
        calls=(Call("reflect", ()), Call("plan", ()), Call("generate", ("Facts:\n- e1",))),
        outputs={"answer": "Bill Me Later", "evidence": ["e1"], "searched": ["What was PayPal Credit called before?"]},
    ),
    Scenario(
        "jade_rewrite_retrieve_select_answer",
        JADE,
        {"question": "What was PayPal Credit called?"},
        ("<workflow>rewrite</workflow>", "PayPal Credit Bill Me Later", "<ids>1</ids>", "Bill Me Later"),
        path=("plan", "rewrite", "retrieve", "select", "answer"),
        calls=(
            Call("plan", ("Question: What was PayPal Credit called?",)),
            Call("rewrite", ("Question: What was PayPal Credit called?",)),
            Call("select", (f"[1] PayPal Credit: {PAYPAL}",)),
            Call("answer", (f"[1] PayPal Credit: {PAYPAL}", "Useful documents: - 1")),
        ),
        outputs={"answer": "Bill Me Later"},
    ),
    Scenario(
        # answer is chosen directly: its `retrieve.docs ?? ""` and `select.ids ?? ""` take the fallbacks
        "jade_answer_directly",
        JADE,
        {"question": "What is 2+2?"},
        ("<workflow>answer</workflow>", "4"),
        path=("plan", "answer"),
        calls=(Call("plan", ()), Call("answer", ("Documents:\n\nUseful documents: \n\nQuestion: What is 2+2?",))),
        outputs={"answer": "4"},
    ),
    Scenario(
        # decompose → a map of retrieves (one search per sub-question) → answer reads their docs
        "jade_decompose_retrieve_each",
        JADE,
        {"question": "PayPal Credit and the Pretenders EP?"},
        (
            "<workflow>decompose</workflow>",
            "<q>PayPal Credit Bill Me Later</q><q>Pretenders Extended Play EP</q>",
            "both",
        ),
        path=("plan", "decompose", "retrieve_each", "answer"),
        calls=(
            Call("plan", ()),
            Call("decompose", ("Question: PayPal Credit and the Pretenders EP?",)),
            Call("answer", (PAYPAL, PRETENDERS, "Useful documents: \n")),
        ),
        outputs={"answer": "both"},
    ),
    Scenario(
        "runaway_stopped",
        REFINE,
        {"topic": "bees"},
        ("t1", "<score>1</score><feedback>f1</feedback>", "t2"),
        path=("draft", "critic", "draft"),
        calls=(Call("draft", ()), Call("critic", ()), Call("draft", ())),
        status="error",
        error_code="node-failed",
        error_has=("3 steps", "runaway"),
        config=RunConfig(max_steps=3),
        step_fails=False,  # stopped by the scheduler before the fourth step, not by a step
    ),
]
