"""`flowc graph`: Mermaid and DOT that their tools read, whatever the node names and roles say."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

import flowc
from flowc.ir.render import to_dot, to_mermaid

# Node names that are Mermaid keywords or start an edge marker, a role with quotes and non-ASCII text.
SPEC = """pipeline p {
  input q: str
  output answer: str <- subgraph.answer
  model small = "local/smollm2"
  node end: llm {
    role: "say \\"hi\\" · café"
    prompt: "Q: {{q}}"
    q <- q
    output answer: str
  }
  node subgraph: llm {
    prompt: "A: {{x}}"
    x <- end.answer
    output answer: str
  }
}
"""

#: Words a Mermaid flowchart reads as syntax, not as a node id.
MERMAID_WORDS = {"end", "graph", "subgraph", "flowchart", "style", "class", "classDef", "click", "linkStyle"}


def test_mermaid_ids_are_never_mermaid_words_and_labels_hold_no_quotes() -> None:
    text = to_mermaid(flowc.compile(SPEC).graph)
    ids = set(re.findall(r"^\s+([A-Za-z_]\w*)[\[(]", text, re.M))
    assert ids and not ids & MERMAID_WORDS, text
    for label in re.findall(r'\["(.*?)"\]', text):
        assert '"' not in label
    assert "end (llm · say #quot;hi#quot; · café)" in text


def test_dot_labels_are_utf8_not_json_escapes() -> None:
    text = to_dot(flowc.compile(SPEC).graph)
    assert "\\u00" not in text
    assert 'label="end (llm · say \\"hi\\" · café)"' in text


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_graphviz_reads_the_dot() -> None:
    out = subprocess.run(["dot", "-Tsvg"], input=to_dot(flowc.compile(SPEC).graph), text=True, capture_output=True)
    assert out.returncode == 0, out.stderr
    assert "café" in out.stdout
