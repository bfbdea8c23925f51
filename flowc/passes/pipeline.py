"""Run passes in order, verifying the IR after each; parse `"a,b{k=v}"` pass lists."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flowc.errors import FlowcError
from flowc.ir.graph import FlowGraph
from flowc.ir.verify import verify
from flowc.passes.base import Pass, PassContext
from flowc.passes.registry import DEFAULT_PASSES, get_pass

_ITEM = re.compile(r"\s*([a-z][a-z0-9-]*)\s*(?:\{([^}]*)\})?\s*(?:,|$)")


def parse_pass_list(text: str) -> list[Pass]:
    """`"check-types,estimate-cost"` or `"my-pass{threshold=0.9}"` → pass instances."""
    out: list[Pass] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise FlowcError(
                "unknown-pass",
                f"cannot read the pass list at {text[pos:]!r}",
                hint="write names separated by commas, options in braces: a,b{k=v}",
            )
        cls = get_pass(m.group(1))
        opts: dict[str, object] = {}
        if m.group(2):
            fields = {f.name: f for f in dataclasses.fields(cls)}
            for kv in m.group(2).split(","):
                k, _, v = kv.partition("=")
                k = k.strip()
                if k not in fields:
                    raise FlowcError(
                        "invalid-pass-option",
                        f"pass '{cls.name}' has no option '{k}'",
                        hint=f"options: {', '.join(fields) or 'none'}",
                    )
                opts[k] = _coerce(v.strip())
        out.append(cls(**opts))
        pos = m.end()
    return out


def _coerce(v: str) -> object:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v, v)


def default_passes() -> list[Pass]:
    return [get_pass(n)() for n in DEFAULT_PASSES]


@dataclass
class PassPipeline:
    passes: Sequence[Pass] = field(default_factory=default_passes)
    verify_each: bool = True
    on_pass: Callable[[str, FlowGraph], None] | None = None

    def run(self, graph: FlowGraph, ctx: PassContext) -> tuple[FlowGraph, list[str]]:
        log: list[str] = []
        if self.verify_each:
            verify(graph, "lower")
        for p in self.passes:
            graph = p.run(graph, ctx)
            log.append(p.name)
            if self.verify_each:
                verify(graph, p.name)
            if self.on_pass is not None:
                self.on_pass(p.name, graph)
        return graph, log
