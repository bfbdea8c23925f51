"""Facts about hosted models (price per token, structured-output support) without importing litellm.

litellm ships its model map as a JSON file inside its package; importing litellm to read it costs
seconds, reading the file costs milliseconds. So this module finds the installed package's folder
(`importlib.util.find_spec` locates a package without running it) and reads the file once, on the
first question. When litellm is not installed, every model is unknown: price 0, no claims.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import Any

_FILE = "model_prices_and_context_window_backup.json"
_lock = threading.Lock()
_table: dict[str, Any] | None = None


def _load() -> dict[str, Any]:
    global _table
    if _table is not None:
        return _table
    with _lock:
        if _table is None:
            data: dict[str, Any] = {}
            spec = importlib.util.find_spec("litellm")
            for folder in (spec.submodule_search_locations or []) if spec else []:
                path = Path(folder) / _FILE
                if path.is_file():
                    try:
                        data = json.loads(path.read_text(encoding="utf-8"))
                    except (OSError, ValueError):
                        data = {}
                    break
            _table = data
    return _table


def model_info(model: str) -> dict[str, Any]:
    """litellm's entry for `model` (`provider/name` or a bare name), or {} when unknown."""
    table = _load()
    provider, _, name = model.partition("/") if "/" in model else ("openai", "", model)
    for key in (model, name):
        entry = table.get(key)
        if isinstance(entry, dict) and entry.get("litellm_provider", provider) in (
            provider,
            f"text-completion-{provider}",
        ):
            return entry
    return {}


def token_prices(model: str) -> tuple[float, float]:
    """USD per prompt token and per completion token (0.0 for local or unknown models)."""
    if model.startswith("local/"):
        return 0.0, 0.0
    info = model_info(model)
    return float(info.get("input_cost_per_token") or 0.0), float(info.get("output_cost_per_token") or 0.0)


def supports_response_schema(model: str) -> bool:
    """Whether the provider's API holds replies to a JSON schema (OpenAI structured outputs and the like)."""
    return bool(model_info(model).get("supports_response_schema"))
