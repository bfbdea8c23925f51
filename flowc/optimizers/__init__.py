"""flowc.optimizers."""
