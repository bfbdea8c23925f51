"""GEPA through the `gepa` package (`-O gepa`); gepa is imported only when the optimizer runs."""

from flowc.optimizers.gepa.optimizer import GEPA

__all__ = ["GEPA"]
