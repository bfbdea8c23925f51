"""What a Prompt flow python node's source file declares, read without running it (`ast`).

A python node's file holds one function decorated with `@tool`; its name is what the flowc `tool`
node calls (flowc binds tools by registered name, never by import path), and its parameters'
annotations say how to read the node's literal inputs (Prompt flow converts `count: '2'` to an int
for `count: int`) and which inputs are connections (objects flowc has no counterpart for).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ToolFunction:
    name: str
    params: dict[str, str] = field(default_factory=dict)  # parameter → annotation text ("" if none)
    is_class_method: bool = False


def _decorated_as_tool(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for d in fn.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        name = target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else ""
        if name == "tool":
            return True
    return False


def _params(fn: ast.FunctionDef | ast.AsyncFunctionDef, *, skip_self: bool) -> dict[str, str]:
    args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
    if skip_self and args and args[0].arg in ("self", "cls"):
        args = args[1:]
    return {a.arg: ast.unparse(a.annotation) if a.annotation is not None else "" for a in args}


def read_tool_file(path: Path) -> ToolFunction | str:
    """The `@tool` function of a python node's file, or a sentence saying why there is none."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    except OSError as e:
        return f"cannot read '{path}': {e.strerror or e}"
    except SyntaxError as e:
        return f"'{path}' is not valid Python (line {e.lineno}: {e.msg})"
    found: list[ToolFunction] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _decorated_as_tool(node):
            found.append(ToolFunction(node.name, _params(node, skip_self=False)))
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef) and _decorated_as_tool(item):
                    found.append(ToolFunction(item.name, _params(item, skip_self=True), is_class_method=True))
    if not found:
        return f"'{path.name}' has no function decorated with @tool"
    if len(found) > 1:
        return (
            f"'{path.name}' has {len(found)} @tool functions ({', '.join(f.name for f in found)}); Prompt flow runs one"
        )
    return found[0]


def convert_literal(value: object, annotation: str) -> object:
    """A literal node input as Prompt flow passes it to a parameter with this annotation."""
    if not isinstance(value, str):
        return value
    try:
        if annotation == "int":
            return int(value)
        if annotation == "float":
            return float(value)
        if annotation == "bool":
            return value.strip().lower() == "true"
    except ValueError:
        return value
    return value


def is_connection(annotation: str) -> bool:
    return annotation.endswith("Connection") or "Connection" in annotation.split("[")[0]
