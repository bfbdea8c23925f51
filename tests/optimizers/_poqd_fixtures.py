"""What the POQD tests share: a tiny random-init reader model, a capitals corpus, the POQD pipeline
on them, and deterministic fakes for the decomposer, the reader and the optimizer LLM.

The reader is a random llama with SmolLM2's vocabulary and chat template (the size of
tests/backbone/tiny_models.py's TINY, with the tokenizer copied from SmolLM2's GGUF), so the jax
generator trains it in seconds. The scripted tests run on the `tiny_gguf` base of conftest.py: the
oracle's adapters are real flowc adapters of it (untrained LoRA, published like the jax
generator's), so the weights param, the gate and `--write` see real files; the fakes answer the
pipeline's requests. jax's persistent compilation cache keeps the compiled steps across the many
jobs of the contract suite.
"""

from __future__ import annotations

import functools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np

from flowc.runtime.lm import LMRequest
from flowc.testing.optimizer_fakes import request_text

#: the tiny reader: SmolLM2's vocabulary, two layers of width 32
TINY_READER: dict[str, object] = {
    "arch": "llama", "vocab_size": 49152, "dim": 32, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2,
    "hidden_dim": 48, "head_dim": 8, "rope_theta": 10000.0, "rms_eps": 1e-5, "context_length": 512,
}  # fmt: skip

CORPUS = [
    {"id": "france", "title": "France", "text": "France is a country in Europe. Its capital is Paris."},
    {"id": "germany", "title": "Germany", "text": "Germany is a country in Europe. Its capital is Berlin."},
    {"id": "italy", "title": "Italy", "text": "Italy is a country in Europe. Its capital is Rome."},
    {"id": "spain", "title": "Spain", "text": "Spain is a country in Europe. Its capital is Madrid."},
    {"id": "japan", "title": "Japan", "text": "Japan is an island country in Asia. Its capital is Tokyo."},
    {"id": "cities", "title": "Capital city", "text": "A capital city is the seat of a government."},
]
TRAIN = [
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "What is the capital of Germany?", "answer": "Berlin"},
    {"question": "What is the capital of Italy?", "answer": "Rome"},
    {"question": "What is the capital of Japan?", "answer": "Tokyo"},
]
VAL = [
    {"question": "What is the capital of Spain?", "answer": "Madrid"},
    {"question": "Which city is the capital of France?", "answer": "Paris"},
]

SPEC = """pipeline poqd_tiny {
  input question: str
  output answer: str <- read.answer
  model decomposer = "fake/decomposer"
  model reader = "local/gguf:READER" {
    trainable: true
  }
  corpus wiki = "corpus.jsonl"
  node decompose: llm {
    model: decomposer
    prompt: "Decompose the query into sub-queries. Query: {{question}}"
    format: tagged
    question <- question
    output subqueries: list[str]
  }
  node search: retrieve {
    corpus: wiki
    method: maxsim
    k: 2
    filter_subqueries: true
    queries <- decompose.subqueries
    query <- question
  }
  node read: llm {
    model: reader
    prompt: "Passages:\\n{{docs}}\\nQuestion: {{question}}\\nAnswer in a few words."
    question <- question
    docs <- search.docs
    output answer: str
  }
  metric em: exact_match(output = answer, target = answer)
}
"""

#: what the fake optimizer LLM writes, numbered by the instructions it was shown
INSTRUCTION = "Name the country of the question in its own sub-query, number {n}."


def write_project(folder: Path, reader: Path) -> Path:
    """The POQD pipeline and its corpus in `folder`; returns the spec's path."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in CORPUS), encoding="utf-8")
    spec = folder / "poqd_tiny.flow"
    spec.write_text(SPEC.replace("READER", str(reader)), encoding="utf-8")
    return spec


def tiny_reader(folder: Path) -> Path:
    """The tiny random reader as an F32 GGUF in `folder` (written once), with jax's compilation cache there."""
    import jax

    from flowc.backbone.config import ModelConfig
    from flowc.backbone.export import export_params
    from flowc.backbone.gguf_io import GGUFModelFile
    from flowc.backbone.model import init_params
    from flowc.runtime.local_profiles import gguf_path

    jax.config.update("jax_compilation_cache_dir", str(folder / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    path = folder / "tiny-reader.gguf"
    if not path.is_file():
        cfg = ModelConfig(**TINY_READER)  # type: ignore[arg-type]
        params = init_params(jax.random.PRNGKey(0), cfg, scale=0.3)
        export_params(params, cfg, path, tokenizer_from=GGUFModelFile(gguf_path("smollm2")))
    return path


def pipeline_answer(request: LMRequest) -> str:
    """The decomposer and the reader.

    The decomposer names the country when its prompt holds the optimizer's instruction (the good
    decomposition), and otherwise writes a sub-query with a hallucinated word that the filter
    drops; the reader answers the capital of the first country its passages name.
    """
    text = request_text(request)
    if "Decompose the query" in text:
        query = text.rsplit("Query:", 1)[1]
        country = re.search(r"(France|Germany|Italy|Spain|Japan)", query)
        if "Name the country" in text and country:
            return f"<subqueries>capital\n{country.group(1)}</subqueries>"
        return "<subqueries>capital metropolis</subqueries>"
    for country, city in (("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid")):
        if f"] {country}:" in text:
            return city
    return "dunno"


def optimizer_answer(request: LMRequest) -> str:
    """A new instruction in OPRO's tags, different from every one shown."""
    shown = request_text(request).count("\ntext:\n") + request_text(request).startswith("text:\n")
    return f"Here it is: <INS>{INSTRUCTION.format(n=shown)}</INS>"


class OracleGenerator:
    """A scripted stand-in for the jax generator: log P(a | Q, D) is 0 when the passage in the
    prompt contains the answer and `miss` (−5) otherwise, raised by `learning` per training step
    (so training lowers the loss and a rescored prompt changes). Its state is a JSON file.

    Its adapter is a real flowc LoRA adapter of the base it is bound to (`factory`), untrained
    (the LoRA's `b` is zero) and tagged with the step count, so each published step is a distinct
    file that the runtime could serve; the scripted pipeline model ignores it."""

    def __init__(self, miss: float = -5.0, learning: float = 0.5) -> None:
        self.miss = miss
        self.learning = learning
        self.steps = 0
        self.trained_on: list[list[str]] = []
        self.base: Path | None = None
        self.seed = 0
        self._trainer: Any = None

    def factory(self, base: Path, seed: int) -> OracleGenerator:
        """POQD's `generator_factory`: this generator, over the reader's base file."""
        self.base, self.seed, self._trainer = base, seed, None
        return self

    def example(self, messages: list[dict[str, str]], completion: str) -> tuple[str, str]:
        return messages[-1]["content"], completion

    def answer_logprobs(self, examples: list[tuple[str, str]]) -> np.ndarray:
        skill = min(0.0, self.miss + self.learning * self.steps)
        return np.asarray([0.0 if answer in prompt.split("Question:")[0] else skill for prompt, answer in examples])

    def train_step(self, groups: list[list[tuple[str, str]]], priors: list[list[float]], k: int) -> float:
        losses = []
        for group, prior in zip(groups, priors, strict=True):
            joint = self.answer_logprobs(group) + np.asarray(prior)
            top = joint.max()
            losses.append(-(top + math.log(np.exp(joint - top).sum())))
        self.trained_on.append([g[0][0].split("Question:")[-1].strip() for g in groups])
        self.steps += 1
        return float(np.mean(losses))

    def save_state(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"steps": self.steps}))
        return path

    def load_state(self, path: Path) -> None:
        self.steps = json.loads(path.read_text())["steps"]

    def save_adapter(self, path: Path, extra: dict[str, object] | None = None) -> Path:
        saved: Path = self.trainer().save(path, extra={"oracle_steps": self.steps, **(extra or {})})
        return saved

    def export_adapter(self, path: Path) -> Path:
        exported: Path = self.trainer().export(path, kind="adapter")
        return exported

    def trainer(self) -> Any:
        if self._trainer is None:
            from flowc.backbone import LoraConfig, LoraTrainer

            assert self.base is not None, "bind the oracle to a base with factory()"
            self._trainer = LoraTrainer.create(_backbone(self.base), LoraConfig(rank=2, alpha=4.0), seed=self.seed)
        return self._trainer


@functools.cache
def _backbone(path: Path) -> Any:
    from flowc.backbone import Backbone

    return Backbone.load(path)
