"""TextGrad's prompts, kept as data in prompts/*.md (our own wording of the structure the paper and
its code describe: tags and fields as in ALGORITHMS.md §1.4–1.5)."""

from __future__ import annotations

from functools import cache
from importlib.resources import files
from string import Template


@cache
def template(name: str) -> Template:
    return Template(files("flowc.optimizers.textgrad").joinpath("prompts", f"{name}.md").read_text(encoding="utf-8"))


def fill(name: str, **values: object) -> str:
    return template(name).substitute({k: str(v) for k, v in values.items()}).strip()
