"""Few-shot bootstrap: the baseline every other optimizer is compared with."""

from flowc.optimizers.bootstrap.optimizer import BootstrapFewShot

__all__ = ["BootstrapFewShot"]
