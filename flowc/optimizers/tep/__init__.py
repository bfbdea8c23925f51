"""TEP: Textual Equilibrium Propagation — local critics to equilibrium, then bounded nudged edits."""

from flowc.optimizers.tep.optimizer import TEP

__all__ = ["TEP"]
