"""TextGrad-style optimization: textual gradients over the IR and textual gradient descent."""

from flowc.optimizers.textgrad.optimizer import TextGrad

__all__ = ["TextGrad"]
