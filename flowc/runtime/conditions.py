"""Loop conditions (`while ...`) evaluated against a run's values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowc.runtime.outputs import MISSING
from flowc.spec.exprs import BoolOp, Coalesce, Compare, Expr, History, Lit, Not, Ref


def evaluate(
    e: Expr,
    inputs: Mapping[str, Any],
    values: Mapping[tuple[str, str], list[Any]],
    pending: tuple[str, Mapping[str, Any]] | None = None,
) -> Any:
    """The value of a loop condition: pipeline inputs, the latest value of each node output
        (`values` holds every output's history), and `pending`, a firing whose outputs are not
    recorded yet (node, outputs), which counts as the latest."""
    if isinstance(e, Lit):
        return e.value
    if isinstance(e, Ref):
        if e.node is None:
            return inputs.get(e.port)
        if pending is not None and e.node == pending[0] and e.port in pending[1]:
            v = pending[1][e.port]
            return None if v is MISSING else v
        hist = values.get((e.node, e.port))
        return hist[-1] if hist else None
    if isinstance(e, History):
        past = list(values.get((e.ref.node or "", e.ref.port), []))
        if pending is not None and e.ref.node == pending[0] and e.ref.port in pending[1]:
            past.append(pending[1][e.ref.port])
        return past
    if isinstance(e, Coalesce):
        return next((v for v in (evaluate(o, inputs, values, pending) for o in e.options) if v is not None), None)
    if isinstance(e, Not):
        return not evaluate(e.item, inputs, values, pending)
    if isinstance(e, BoolOp):
        vals = (bool(evaluate(i, inputs, values, pending)) for i in e.items)
        return all(vals) if e.op == "and" else any(vals)
    assert isinstance(e, Compare)
    a, b = evaluate(e.left, inputs, values, pending), evaluate(e.right, inputs, values, pending)
    try:
        return {
            "==": lambda: a == b,
            "!=": lambda: a != b,
            "<": lambda: a < b,
            "<=": lambda: a <= b,
            ">": lambda: a > b,
            ">=": lambda: a >= b,
            "contains": lambda: str(b) in (a if isinstance(a, list) else str(a)),
        }[e.op]()
    except TypeError:
        return False
