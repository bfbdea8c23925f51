"""POQD (`-O poqd`): the decomposer's prompt searched against the downstream loss, alternating with
LoRA training of the reader's model (ALGORITHMS.md §3; docs/poqd.md). jax is imported only when a
job trains (flowc/optimizers/poqd/generator.py)."""

from flowc.optimizers.poqd.optimizer import POQD

__all__ = ["POQD"]
