"""Prompt flow connections and LLM settings → flowc model declarations.

A Prompt flow llm node names a connection (credentials kept by Prompt flow) and carries the model
settings among its inputs. flowc declares each model once, with its settings, and reads credentials
from the environment (litellm's variables: OPENAI_API_KEY, AZURE_API_KEY/AZURE_API_BASE, ...). So
each distinct (model, temperature, max_tokens, seed) becomes one `model` declaration; its litellm
id is `azure/<deployment_name>` for Azure OpenAI and `openai/<model>` otherwise, or what
`--model CONNECTION=ID` says.
"""

from __future__ import annotations

import re
from typing import Any

from flowc.interop.promptflow.reading import Dag, flowc_name

#: The llm tool's keyword arguments that are model settings, not template variables.
LLM_SETTINGS = frozenset(
    {
        "deployment_name",
        "model",
        "temperature",
        "max_tokens",
        "seed",
        "top_p",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "logit_bias",
        "n",
        "user",
        "response_format",
        "functions",
        "function_call",
        "tools",
        "tool_choice",
        "stream",
        "suffix",
        "echo",
        "best_of",
        "logprobs",
        "detail",
    }
)
#: Settings flowc has no counterpart for, with the value that means "the provider's default".
_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "top_p": (1, 1.0, "1", "1.0"),
    "presence_penalty": (0, 0.0, "0", "0.0"),
    "frequency_penalty": (0, 0.0, "0", "0.0"),
    "n": (1, "1"),
    "stop": (None, "", "[]"),
    "logit_bias": (None, "", "{}"),
    "user": (None, ""),
    "stream": (False, "false", "False"),
    "echo": (False, "false", "False"),
    "suffix": (None, ""),
    "best_of": (1, "1"),
    "logprobs": (None, ""),
    "detail": ("auto",),
}
#: Prompt flow's llm tool samples at temperature 1.0 when a node sets none (flowc's default is 0.0).
PROMPTFLOW_TEMPERATURE = 1.0


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


class ModelTable:
    def __init__(self, dag: Dag, overrides: dict[str, str]) -> None:
        self.dag = dag
        self.overrides = overrides
        self._decls: dict[str, dict[str, Any]] = {}
        self._by_key: dict[tuple[Any, ...], str] = {}

    def for_node(self, data: dict[str, Any], path: tuple[str | int, ...], pf_name: str) -> str | None:
        """The name of the model declaration an llm node calls (declared on first use)."""
        d = self.dag
        inputs = data.get("inputs") or {}
        connection = str(data.get("connection") or "")
        deployment, model = inputs.get("deployment_name"), inputs.get("model")
        azure = (
            str(data.get("provider", "")).lower() == "azureopenai"
            or str(data.get("module", "")) == "promptflow.tools.aoai"
            or bool(re.search(r"azure|aoai", connection, re.I))
        )
        if connection in self.overrides:
            model_id = self.overrides[connection]
        elif azure and deployment:
            model_id = f"azure/{deployment}"
        elif model or deployment:
            model_id = f"openai/{model or deployment}"
        else:
            d.report(
                "import-unsupported",
                f"llm node '{pf_name}' names no model or deployment_name",
                (*path, "inputs"),
                hint="add 'model:' to its inputs, or pass --model CONNECTION=ID",
            )
            return None
        for key in ("connection", "provider", "module", "api"):
            if key in data:
                where = (*path, key)
                if key == "connection" and connection not in self.overrides:
                    d.report(
                        "import-dropped",
                        f"connection '{connection}' becomes model '{model_id}'; credentials come from the environment",
                        where,
                        severity="note",
                        hint=f"choose another model with --model {connection}=PROVIDER/MODEL",
                    )
                elif key == "api" and str(data[key]) not in ("chat", "completion"):
                    d.report("import-unsupported", f"the llm api '{data[key]}' cannot be converted", where)
                elif key == "api" and str(data[key]) == "completion":
                    d.report(
                        "import-dropped",
                        "the completion api becomes a chat call with one user message",
                        where,
                        severity="warning",
                    )
        settings: dict[str, Any] = {"id": model_id}
        temperature = _number(inputs.get("temperature"))
        if "temperature" not in inputs:
            d.report(
                "import-dropped",
                f"node '{pf_name}' sets no temperature: Prompt flow samples at {PROMPTFLOW_TEMPERATURE}, "
                "and so does the converted model",
                (*path, "inputs"),
                severity="note",
            )
            temperature = PROMPTFLOW_TEMPERATURE
        if temperature is not None and temperature != 0.0:
            settings["temperature"] = temperature
        max_tokens = _number(inputs.get("max_tokens"))
        if max_tokens is not None and max_tokens >= 1:
            settings["max_tokens"] = int(max_tokens)
        seed = _number(inputs.get("seed"))
        if seed is not None:
            settings["seed"] = int(seed)
        for key, value in inputs.items():
            if key in _DEFAULTS:
                where = (*path, "inputs", key)
                if value in _DEFAULTS[key] or str(value) in {str(x) for x in _DEFAULTS[key]}:
                    d.report(
                        "import-dropped", f"'{key}: {value}' is the default; dropped", where, key=True, severity="note"
                    )
                else:
                    d.report(
                        "import-dropped",
                        f"'{key}' has no flowc counterpart and is dropped: the model samples with its default",
                        where,
                        key=True,
                        severity="warning",
                    )
            elif key in ("response_format", "functions", "function_call", "tools", "tool_choice") and value:
                d.report(
                    "import-unsupported",
                    f"'{key}' cannot be converted: flowc asks for typed outputs in the prompt instead",
                    (*path, "inputs", key),
                    key=True,
                    hint="declare the node's outputs (format: json) in the converted pipeline",
                )
        identity = (model_id, settings.get("temperature"), settings.get("max_tokens"), settings.get("seed"))
        if identity in self._by_key:
            return self._by_key[identity]
        base = flowc_name(model_id.split("/", 1)[-1].replace(".", "").replace("-", "_")).lower()
        name, i = base, 2
        while name in self._decls:
            name, i = f"{base}_{i}", i + 1
        self._decls[name] = settings
        self._by_key[identity] = name
        return name

    def declarations(self) -> dict[str, dict[str, Any]]:
        return dict(self._decls)
