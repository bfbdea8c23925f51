from flowc.optimizers.tep import TEP
from flowc.runtime.lm import LMClient
from flowc.testing.contracts import OptimizerContract

class TestTEPContract(OptimizerContract):
    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> TEP:
        return TEP(pipeline_lm=pipeline_lm, optimizer_lm=optimizer_lm, optimizer_model="fake/optimizer",
                   t_free=2, t_nudge=2, batch_size=2, resume=resume)
