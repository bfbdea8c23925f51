"""The JSON Schema of the YAML form (`flowc schema`), with each field's docstring as its description.

The spec models document a field with a docstring under it. pydantic's `use_attribute_docstrings`
would read them at import time (an `inspect.getsource` per class, ~50 ms of every command);
only the schema needs them, so they are read here, in one parse of the models' source.
"""

from __future__ import annotations

import ast
import inspect
from typing import Any

from pydantic import BaseModel

from flowc.spec import models


def json_schema() -> dict[str, Any]:
    """The schema of a spec (`Pipeline`), every property described by its field's docstring."""
    schema: dict[str, Any] = models.Pipeline.model_json_schema(by_alias=True)
    docs = field_docstrings()
    classes = {
        name: cls
        for name, cls in vars(models).items()
        if isinstance(cls, type) and issubclass(cls, BaseModel) and cls.__module__ == models.__name__
    }
    for name, body in {"Pipeline": schema, **schema.get("$defs", {})}.items():
        cls = classes.get(name)
        if cls is None:
            continue
        aliases = {(f.alias or n): n for n, f in cls.model_fields.items()}
        for prop, sub in body.get("properties", {}).items():
            doc = _inherited(cls, aliases.get(prop, prop), docs)
            if doc:
                sub["description"] = doc
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flowc pipeline spec"
    return schema


def field_docstrings() -> dict[tuple[str, str], str]:
    """(class, field) -> the docstring written under the field, for every class of the models."""
    tree = ast.parse(inspect.getsource(models))
    out: dict[tuple[str, str], str] = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        for field, after in zip(cls.body, cls.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                out[(cls.name, field.target.id)] = inspect.cleandoc(after.value.value)
    return out


def _inherited(cls: type, field: str, docs: dict[tuple[str, str], str]) -> str | None:
    """The docstring of `field` in `cls` or in the nearest base that declares it."""
    for klass in cls.__mro__:
        doc = docs.get((klass.__name__, field))
        if doc:
            return doc
    return None
