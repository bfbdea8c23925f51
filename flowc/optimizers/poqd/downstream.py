"""The downstream side of POQD's search: decompose the training questions with a candidate prompt,
filter, retrieve by MaxSim, and score the loss with the generator (ALGORITHMS.md §3.2–3.3).

`Downstream` holds what does not change during a job (the pipeline's parts, the training questions,
the retriever) and memoizes log P(a | Q, D) per generator version, question and passage: prompts
that retrieve the same passages for a question cost no second forward pass, and none is repeated
until the generator changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flowc.compile import CompiledPipeline
from flowc.errors import OutputParseError
from flowc.optimizers.poqd.loss import log_prior, question_loss
from flowc.optimizers.poqd.reader import answer_reply, reader_messages
from flowc.optimizers.poqd.roles import Roles, bound_inputs
from flowc.runtime.config import RunConfig
from flowc.runtime.lm import LMClient
from flowc.runtime.nodes import NodeContext, run_node
from flowc.runtime.resources import RetrieverPool
from flowc.runtime.retrieval import MaxSimRetriever, filter_subqueries, top_k_hits
from flowc.runtime.tools import ToolRegistry
from flowc.spec.models import RetrieveNode

Example = Mapping[str, Any]


@dataclass(frozen=True)
class Retrieved:
    """The top-K passages of one question: corpus positions and MaxSim scores, best first."""

    docs: tuple[int, ...]
    scores: tuple[float, ...]


@dataclass
class Downstream:
    """Decomposition, retrieval and loss for one job.

    `generator` is any object with `example(messages, completion)` and `answer_logprobs(examples)`
    (`generator.Generator`, or a test double); `version` names its current weights for the memo.
    """

    compiled: CompiledPipeline
    roles: Roles
    trainset: Sequence[Example]
    target: str
    retriever: MaxSimRetriever
    k: int
    temperature: float = 1.0
    generator: Any = None
    version: str = ""
    memo: dict[tuple[str, int, int], float] = field(default_factory=dict)
    _retrieved: dict[str, list[Retrieved]] = field(default_factory=dict)

    @classmethod
    async def build(
        cls,
        compiled: CompiledPipeline,
        roles: Roles,
        trainset: Sequence[Example],
        target: str,
        pool: RetrieverPool,
        *,
        k: int = 0,
        temperature: float = 1.0,
    ) -> Downstream:
        """Load the retriever of the pipeline's retrieve node (its corpus embeddings from the cache)."""
        node = compiled.spec.nodes[roles.retriever]
        assert isinstance(node, RetrieveNode)
        path = compiled.spec.base_dir / compiled.spec.corpora[node.corpus].path
        retriever = await pool.get(path, "maxsim")
        assert isinstance(retriever, MaxSimRetriever)
        return cls(compiled, roles, trainset, target, retriever, k or node.k, temperature)

    # -- decomposition (LM calls) ------------------------------------------------------------------

    async def subqueries(self, candidate: CompiledPipeline, lm: LMClient) -> tuple[list[list[str]], int]:
        """The candidate pipeline's decomposer on every training question, through `lm`, then the
        hallucination filter (the question itself when nothing is left, as the retrieve node does).
        Returns the filtered sub-queries and how many replies could not be read (after the
        runtime's one repair request); an unreadable reply leaves the question alone."""
        node = candidate.graph.node(self.roles.decomposer)
        ctx = NodeContext(
            compiled=candidate,
            lm=lm,
            tools=ToolRegistry(load_plugins=False),
            retrievers=RetrieverPool(),
            config=RunConfig(),
            subflow_executor=_no_subflow,
            map_item=object(),
        )
        out: list[list[str]] = []
        unreadable = 0
        for ex in self.trainset:
            try:
                values = await run_node(node, bound_inputs(candidate, self.roles.decomposer, ex), ctx)
                raw = values.get(self.roles.subqueries_port)
            except OutputParseError:
                raw, unreadable = None, unreadable + 1
            subs = [str(s) for s in raw if isinstance(s, str | int | float)] if isinstance(raw, list) else []
            query = self.query_of(ex)
            out.append(filter_subqueries(subs, query) or [query])
        return out, unreadable

    def query_of(self, example: Example) -> str:
        """The original query the retrieve node filters against (its `query` input)."""
        return str(bound_inputs(self.compiled, self.roles.retriever, example).get("query") or "")

    # -- retrieval ---------------------------------------------------------------------------------

    def retrieve(self, subqueries: Sequence[Sequence[str]]) -> list[Retrieved]:
        """The top-K passages of each question by averaged MaxSim over its sub-queries (the last
        few results are kept: training steps retrieve for the same sub-queries again)."""
        key = json.dumps(subqueries)
        if key not in self._retrieved:
            if len(self._retrieved) >= 8:
                self._retrieved.pop(next(iter(self._retrieved)))
            self._retrieved[key] = self._retrieve(subqueries)
        return self._retrieved[key]

    def _retrieve(self, subqueries: Sequence[Sequence[str]]) -> list[Retrieved]:
        scores = self.retriever.similarities_many(subqueries)
        corpus = self.retriever.corpus
        out = []
        for row in scores:
            hits = top_k_hits(corpus, row, self.k)
            out.append(Retrieved(tuple(corpus.index_of(h.doc.id) for h in hits), tuple(h.score for h in hits)))
        return out

    # -- the loss ----------------------------------------------------------------------------------

    def question_losses(self, retrieved: Sequence[Retrieved], indices: Sequence[int] | None = None) -> np.ndarray:
        """−log Σ_D P(a | Q, D) P(D | Q) for the training questions `indices` (default: all)."""
        idx = list(range(len(self.trainset))) if indices is None else list(indices)
        need = [(i, d) for i in idx for d in retrieved[i].docs if (self.version, i, d) not in self.memo]
        if need:
            lps = self.generator.answer_logprobs([self.example(i, d) for i, d in need])
            for (i, d), lp in zip(need, lps, strict=True):
                self.memo[(self.version, i, d)] = float(lp)
        out = []
        for i in idx:
            logps = [self.memo[(self.version, i, d)] for d in retrieved[i].docs]
            out.append(question_loss(logps, retrieved[i].scores, self.temperature))
        return np.asarray(out)

    def loss(self, retrieved: Sequence[Retrieved]) -> float:
        """L(Θ; p): the mean over the training questions."""
        return float(self.question_losses(retrieved).mean())

    def example(self, i: int, doc: int) -> Any:
        """The generator's (prompt, answer) example for training question i and passage `doc`."""
        ex = self.trainset[i]
        d = self.retriever.corpus[doc]
        messages = reader_messages(self.compiled, self.roles, ex, d)
        return self.generator.example(messages, answer_reply(self.compiled, self.roles, ex[self.target]))

    def training_batch(
        self, retrieved: Sequence[Retrieved], indices: Sequence[int]
    ) -> tuple[list[list[Any]], list[list[float]]]:
        """The generator's examples and log P(D | Q) for the questions `indices`."""
        groups = [[self.example(i, d) for d in retrieved[i].docs] for i in indices]
        priors = [list(log_prior(retrieved[i].scores, self.temperature)) for i in indices]
        return groups, priors

    def forget(self, keep: Callable[[str], bool]) -> None:
        """Drop memoized log-probs of generator versions `keep` rejects (old weights)."""
        self.memo = {key: v for key, v in self.memo.items() if keep(key[0])}


async def _no_subflow(alias: str, inputs: dict[str, Any]) -> dict[str, Any]:
    raise AssertionError("find_roles admits no subflow as the decomposer")
