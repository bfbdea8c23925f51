# The runtime helpers of an exported DSPy program: `flowc export --to dspy` copies this file's code
# into the program it writes, so the program needs only dspy. It keeps the values nodes produced and
# reads flowc bindings (`plan.query ?? question`, `all reflect.evidence`, literals) the way flowc's
# executor does: the latest value of an output, every value for `all`, the first non-null
# alternative for `??`.
from __future__ import annotations

import json as _json
from typing import Any as _Any

_NOT_READY = object()


class Values:
    """What the nodes of one run produced so far, and the routers' choices."""

    def __init__(self, inputs: dict[str, _Any]) -> None:
        self.inputs = dict(inputs)
        self.history: dict[str, list[_Any]] = {}
        self.choice: dict[str, str | None] = {}

    def put(self, node: str, outputs: dict[str, _Any]) -> None:
        for port, value in outputs.items():
            self.history.setdefault(f"{node}.{port}", []).append(value)

    def read(self, binding: str, scope: dict[str, _Any] | None = None) -> _Any:
        """The value of a flowc binding, or _NOT_READY when it has none yet."""
        seen_null = False
        for option in binding.split(" ?? "):
            value = self._one(option.strip(), scope or {})
            if value is None:
                seen_null = True
            elif value is not _NOT_READY:
                return value
        return None if seen_null else _NOT_READY

    def _one(self, text: str, scope: dict[str, _Any]) -> _Any:
        if text.startswith("all "):
            return list(self.history.get(text[4:].strip(), []))
        if text[:1] in '"-0123456789[{' or text in ("true", "false", "null"):
            return _json.loads(text)
        if "." in text:
            seen = self.history.get(text)
            return seen[-1] if seen else _NOT_READY
        if text in scope:
            return scope[text]
        return self.inputs.get(text, _NOT_READY)

    def bind(self, bindings: dict[str, str], scope: dict[str, _Any] | None = None) -> dict[str, _Any] | None:
        """Every input of a node, or None when one has no value yet (the node cannot run)."""
        args = {port: self.read(b, scope) for port, b in bindings.items()}
        return None if any(v is _NOT_READY for v in args.values()) else args

    def route(self, router: str, answer: _Any, choices: tuple[str, ...], fallback: str | None) -> None:
        self.choice[router] = answer if answer in choices else fallback

    def chose(self, router: str, node: str) -> bool:
        return self.choice.get(router) == node

    def output(self, binding: str) -> _Any:
        value = self.read(binding)
        return None if value is _NOT_READY else value


def gather(results: list[dict[str, _Any]], ports: tuple[str, ...]) -> dict[str, list[_Any]]:
    """A map node's outputs: one list per port, in the order of the items."""
    return {p: [r.get(p) for r in results] for p in ports}


def passage_ids(values: _Any) -> list[str]:
    """The ids of the passages in a retrieve node's earlier outputs (nested in lists for a map)."""
    if isinstance(values, dict):
        return [str(values["id"])] if "id" in values else []
    if isinstance(values, list):
        return [i for v in values for i in passage_ids(v)]
    return []


def compare(a: _Any, op: str, b: _Any) -> bool:
    """A loop condition's comparison, as flowc evaluates it (a type mismatch is false)."""
    try:
        if op == "contains":
            return str(b) in (a if isinstance(a, list) else str(a))
        return bool(
            {"==": a == b, "!=": a != b}[op]
            if op in ("==", "!=")
            else {"<": lambda: a < b, "<=": lambda: a <= b, ">": lambda: a > b, ">=": lambda: a >= b}[op]()
        )
    except TypeError:
        return False
