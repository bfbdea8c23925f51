"""PyYAML set to the YAML 1.2 core schema, which JSON and every current YAML tool follow.

PyYAML implements YAML 1.1, whose implicit types surprise: `yes`, `no`, `on`, `off`, `y` and `n`
are booleans, `0777` is octal, `1:30` is 90 and `1e+30` is text. In a spec that silently turned
a demo's `answer: no` into `false`. The loader here resolves plain scalars as YAML 1.2's core
schema does (only `true`/`false` are booleans; decimal, `0o` and `0x` integers; floats with an
exponent or a dot; `null` and `~`) and records every explicit tag (`!!python/object/apply:...`,
`!foo`, `!!str`) so the spec loader can refuse it: a spec is plain data. The dumper quotes any
text that either YAML 1.1 or 1.2 would read as something else, so other tools read it back too.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_CORE: tuple[tuple[str, str, str], ...] = (
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    (
        "float",
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        "-+0123456789.",
    ),
    ("null", r"^(?:~|null|Null|NULL|)$", "~nN\0"),
)


class CoreLoader(yaml.SafeLoader):
    """A safe loader with YAML 1.2 core-schema scalars that remembers each explicitly tagged node."""

    yaml_implicit_resolvers: dict[Any, Any] = {}  # noqa: RUF012 (PyYAML's class-level registry)

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.tagged: list[yaml.Node] = []

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()
        explicit = getattr(event, "tag", None) is not None
        node = super().compose_node(parent, index)
        if explicit and node is not None:
            self.tagged.append(node)
        return node

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        text = str(self.construct_scalar(node))
        if text.startswith(("0o", "0x")):
            return int(text, 0)
        return int(text, 10)  # `0777` is 777: 1.2 has no leading-zero octal


def _first_chars(chars: str) -> list[str]:
    return [c if c != "\0" else "" for c in chars]  # "" is PyYAML's key for the empty scalar


for _kind, _pattern, _first in _CORE:
    CoreLoader.add_implicit_resolver(f"tag:yaml.org,2002:{_kind}", re.compile(_pattern), _first_chars(_first))
CoreLoader.add_constructor("tag:yaml.org,2002:int", CoreLoader.construct_yaml_int)


class CoreDumper(yaml.SafeDumper):
    """PyYAML's 1.1 dumper that also quotes text 1.2 reads as a number (`1e3`, `0o17`)."""


for _kind, _pattern, _first in _CORE:
    CoreDumper.add_implicit_resolver(f"tag:yaml.org,2002:{_kind}", re.compile(_pattern), _first_chars(_first))
