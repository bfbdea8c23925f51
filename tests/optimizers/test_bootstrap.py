"""BootstrapFewShot: the optimizer contract, then harvesting and the validation gate."""

from __future__ import annotations

from flowc.optimizers.bootstrap import BootstrapFewShot
from flowc.runtime.lm import LMClient
from flowc.testing.contracts import OptimizerContract


class TestBootstrapContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> BootstrapFewShot:
        return BootstrapFewShot(pipeline_lm=pipeline_lm, max_demos=2, max_bootstrapped=3, num_candidates=3, resume=resume)
