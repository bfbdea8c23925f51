"""POQD passes the conformance suite every optimizer passes (flowc.testing.contracts).

The pipeline is the POQD shape on a capitals corpus (tests/optimizers/_poqd_fixtures.py): a fake
decomposer that names the country once the optimizer's instruction asks for it, MaxSim retrieval
with the hallucination filter (a hashed bag-of-words encoder), and a reader. The generator is
`OracleGenerator` (log P(a | Q, D) = 0 when the passage holds the answer), so the searched prompt
really lowers the downstream loss and the suite runs in seconds; the jax generator on a tiny
random model is covered by test_poqd.py.
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
from flowc.testing.contracts import OptimizerContract
from flowc.testing.retrieval_fakes import HashEncoder


class TestPOQDContract(OptimizerContract):
    # The validation gate is checked in test_poqd.py: under the suite's hurting model a new
    # decomposer prompt that retrieves the same passages leaves every reader request unchanged.
    uses_validation_gate = False

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.folder = tmp_path / "project"
        reader = tmp_path / "reader.gguf"  # the oracle generator never reads it
        reader.write_bytes(b"")
        self.spec = write_project(self.folder, reader)

    @pytest.fixture
    def compiled(self) -> CompiledPipeline:
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
        opt.generator_factory = lambda base, seed: OracleGenerator()
        return opt
