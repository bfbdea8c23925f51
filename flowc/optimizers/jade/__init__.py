"""JADE: a dynamic workflow's planner and executors, one shared backbone, trained jointly — the
weights by PPO on the pipeline's outcome reward, the role prompts by TextGrad (docs/jade.md).

Importing this package does not import jax; the PPO update does, when it runs."""

from flowc.optimizers.jade.optimizer import Jade

__all__ = ["Jade"]
