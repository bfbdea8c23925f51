"""POQD passes the conformance suite of the optimizers that train weights (flowc.testing.contracts
`WeightOptimizerContract`: every check of `OptimizerContract`, and the patch's `reader.weights`
names a published adapter of the reader's base, servable, pinned by the artifact, byte-identical
across equal runs).

The pipeline is the POQD shape on a capitals corpus (tests/optimizers/_poqd_fixtures.py): a fake
decomposer that names the country once the optimizer's instruction asks for it, MaxSim retrieval
with the hallucination filter (a hashed bag-of-words encoder), and a reader. The generator is
`OracleGenerator` (log P(a | Q, D) = 0 when the passage holds the answer), so the searched prompt
really lowers the downstream loss and the suite runs in seconds; the jax generator on a tiny
random model is covered by test_poqd.py. The oracle's adapters are real (untrained) LoRA adapters
of the tiny base, published the way the jax generator's are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from _poqd_fixtures import TRAIN, VAL, OracleGenerator, optimizer_answer, pipeline_answer, write_project

import flowc
from flowc.compile import CompiledPipeline
from flowc.optimizers.poqd import POQD
from flowc.runtime.lm import LMClient, LMRequest
from flowc.runtime.resources import RetrieverPool
from flowc.testing.contracts import WeightOptimizerContract
from flowc.testing.retrieval_fakes import HashEncoder


class TestPOQDContract(WeightOptimizerContract):
    # The validation gate (with the adapter served) is checked in test_poqd.py: the suite's check
    # needs a pipeline that a model answering every request with one validation answer scores 1.0
    # on, and that model cannot answer POQD's decomposer.
    uses_validation_gate = False

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path, tiny_gguf: Path) -> None:
        self.folder = tmp_path / "project"
        self.spec = write_project(self.folder, tiny_gguf)

    @pytest.fixture
    def base_model(self, tiny_gguf: Path) -> str:
        return f"local/gguf:{tiny_gguf}"

    @pytest.fixture
    def compiled(self) -> CompiledPipeline:  # the POQD pipeline over base_model, not the suite's QA one
        return flowc.compile(self.spec)

    @pytest.fixture
    def trainset(self) -> Sequence[Mapping[str, Any]]:
        return [dict(x) for x in TRAIN]

    @pytest.fixture
    def valset(self) -> Sequence[Mapping[str, Any]]:
        return [dict(x) for x in VAL]

    def pipeline_answer(self, request: LMRequest) -> str:
        return pipeline_answer(request)

    def optimizer_answer(self, request: LMRequest) -> str:
        return optimizer_answer(request)

    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> POQD:
        opt = POQD(
            pipeline_lm=pipeline_lm,
            optimizer_lm=optimizer_lm,
            optimizer_model="fake/optimizer",
            tau=2,
            kappa=2,
            max_rounds=2,
            final_steps=2,
            batch_size=2,
            resume=resume,
        )
        opt.retrievers = RetrieverPool(self.folder / "embeddings", encoder=HashEncoder())
        opt.generator_factory = OracleGenerator().factory
        return opt
