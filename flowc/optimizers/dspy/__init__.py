"""DSPy's optimizers on flowc pipelines (`-O dspy:MIPROv2` ...); dspy is imported only when one runs."""

from flowc.optimizers.dspy.optimizer import (
    GEPA,
    SIMBA,
    BootstrapFewShot,
    BootstrapFewShotWithRandomSearch,
    DSPyOptimizer,
    MIPROv2,
)

__all__ = ["GEPA", "SIMBA", "BootstrapFewShot", "BootstrapFewShotWithRandomSearch", "DSPyOptimizer", "MIPROv2"]
