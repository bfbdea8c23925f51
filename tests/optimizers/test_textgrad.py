"""TextGrad: the optimizer contract, then the mechanics of backward and TGD under fake models."""

from __future__ import annotations

from flowc.optimizers.textgrad import TextGrad
from flowc.runtime.lm import LMClient
from flowc.testing.contracts import OptimizerContract


class TestTextGradContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> TextGrad:
        return TextGrad(
            pipeline_lm=pipeline_lm,
            optimizer_lm=optimizer_lm,
            optimizer_model="fake/optimizer",
            steps=3,
            batch_size=2,
            resume=resume,
        )
