"""OpenTelemetry spans per run, node and LM call — when `opentelemetry` is installed (the `otel`
extra) and the application configured a tracer provider; otherwise these are no-ops costing a
function call. flowc never configures an exporter itself: that is the application's choice."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import trace as _trace
except ImportError:  # pragma: no cover - depends on the installed extras
    _trace = None  # type: ignore[assignment]


@contextmanager
def span(name: str, **attributes: Any) -> Iterator[Any]:
    """A span named `name` with `attributes` (None values dropped); yields it (or None)."""
    if _trace is None:
        yield None
        return
    tracer = _trace.get_tracer("flowc")
    attrs = {k: v for k, v in attributes.items() if v is not None}
    with tracer.start_as_current_span(name, attributes=attrs) as sp:
        yield sp


def set_attributes(sp: Any, **attributes: Any) -> None:
    if sp is not None:
        sp.set_attributes({k: v for k, v in attributes.items() if v is not None})
