"""Optimizers: rewrite a compiled pipeline's params (prompts, demos, weights) against data and a metric.

The contract is in `flowc.optimizers.base`; `flowc.optimizers.registry` finds optimizers by name.
"""
