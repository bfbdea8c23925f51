"""A Prompt flow llm node → a flowc llm node: its prompt file, model and template inputs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowc.interop.promptflow.jinja import convert_prompt
from flowc.interop.promptflow.models import LLM_SETTINGS
from flowc.interop.promptflow.reading import flowc_name
from flowc.spec.exprs import Expr, Lit

if TYPE_CHECKING:
    from flowc.interop.promptflow.convert import Converter, _Node

_KNOWN = ("name", "type", "source", "inputs", "connection", "api", "provider", "module", "activate")


def llm_node(conv: Converter, n: _Node) -> dict[str, Any] | None:
    d = conv.dag
    raw = n.data.get("source")
    source: dict[str, Any] = raw if isinstance(raw, dict) else {}
    if source.get("type") != "code" or not source.get("path"):
        d.report(
            "import-unsupported",
            f"llm node '{n.pf_name}' has no prompt file (source: {{type: code, path: ...}})",
            (*n.path, "source"),
        )
        return None
    prompt_file = conv.prompt_file(str(source["path"]))
    if prompt_file is None:
        d.report("import-unsupported", f"cannot read the prompt file '{source['path']}'", (*n.path, "source", "path"))
        return None
    template, diags = convert_prompt(prompt_file)
    conv.add(diags)
    model = conv.models.for_node(n.data, n.path, n.pf_name)
    inputs: dict[str, Expr] = {}
    for key, value in (n.data.get("inputs") or {}).items():
        if key in LLM_SETTINGS:
            continue
        expr = conv.input_expr(value, (*n.path, "inputs", key))
        if expr is not None:
            inputs[flowc_name(key)] = expr
    conv._extra_keys(n, _KNOWN)
    if template is None or model is None:
        return None
    for var in template.variables:
        if var not in inputs:
            d.report(
                "import-dropped",
                f"the prompt of '{n.pf_name}' uses {{{{{var}}}}}, which the node does not bind: Prompt flow renders "
                'it empty, and so does the converted node (bound to "")',
                (*n.path, "inputs"),
                severity="warning",
                hint=f"bind '{var}' in the node's inputs, or remove it from the prompt",
            )
            inputs[var] = Lit(0, "")
    out: dict[str, Any] = {"kind": "llm", "model": model}
    if template.system:
        out["system"] = template.system
    out["prompt"] = template.prompt
    out["inputs"] = {k: str(v) for k, v in inputs.items()}
    if n.routes_to:
        out["outputs"] = {n.ports[""]: "route[" + ", ".join(n.routes_to) + "]"}
    else:
        out["outputs"] = {"text": "str"}
    return out
