"""Saving and loading adapters as safetensors (no pickle): tensors plus JSON metadata.

The metadata carries the LoRA config, the model config and the sha256 of the base GGUF file, so an
adapter is never silently applied to a different base. Files are written byte-reproducibly (the
header's keys sorted), so the same adapter always has the same sha256: its content address.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from flowc.backbone.config import ModelConfig
from flowc.backbone.lora import LoraConfig
from flowc.errors import FlowcError
from flowc.spec.adapters import FORMAT, canonical_safetensors

__all__ = ("FORMAT", "load_adapter", "save_adapter")


def save_adapter(
    path: str | Path,
    lora: Any,
    lora_cfg: LoraConfig,
    *,
    base_sha256: str,
    model_config: ModelConfig,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write `lora` to `path` (a `.safetensors` file), atomically.

    Args:
        path: the file to write.
        lora: the adapter pytree `{projection: {"a", "b"}}`.
        lora_cfg: its rank, alpha and targets.
        base_sha256: the checksum of the base GGUF file it was trained on.
        model_config: the base model's hyper-parameters.
        extra: more JSON-serializable provenance (steps, data hash, metrics...).
    """
    from safetensors.numpy import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        f"{name}.{part}": np.ascontiguousarray(np.asarray(arr, np.float32))
        for name, ad in lora.items()
        for part, arr in ad.items()
    }
    meta = {
        "format": FORMAT,
        "lora": json.dumps(lora_cfg.to_dict()),
        "model_config": json.dumps(model_config.to_dict()),
        "base_sha256": base_sha256,
        "extra": json.dumps(extra or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(canonical_safetensors(save(tensors, metadata=meta)))
    os.replace(tmp, path)
    return path


def load_adapter(
    path: str | Path, *, expected_base_sha256: str | None = None
) -> tuple[dict[str, dict[str, np.ndarray]], LoraConfig, dict[str, Any]]:
    """Read an adapter written by `save_adapter`.

    Returns:
        (lora, lora_cfg, info) where info has `base_sha256`, `model_config` and `extra`.

    Raises:
        FlowcError: `model-file-not-found` if the file is missing, `artifact-invalid` if it is not a
            flowc adapter, `model-checksum-mismatch` if it was trained on another base.
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FlowcError("model-file-not-found", f"no adapter file at {path}", hint="check the path")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise FlowcError("artifact-invalid", f"{path} is not a safetensors file: {e}", hint="re-save it") from e
    if meta.get("format") != FORMAT:
        raise FlowcError(
            "artifact-invalid",
            f"{path} is not a flowc LoRA adapter (format {meta.get('format')!r})",
            hint="save adapters with flowc.backbone.checkpoint.save_adapter",
        )
    base = meta["base_sha256"]
    if expected_base_sha256 is not None and base != expected_base_sha256:
        raise FlowcError(
            "model-checksum-mismatch",
            f"adapter {path.name} was trained on a base with sha256 {base[:12]}…, "
            f"this base is {expected_base_sha256[:12]}…",
            hint="load the base model the adapter was trained on",
        )
    lora: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in tensors.items():
        name, _, part = key.rpartition(".")
        lora.setdefault(name, {})[part] = arr
    info = {
        "base_sha256": base,
        "model_config": ModelConfig.from_dict(json.loads(meta["model_config"])),
        "extra": json.loads(meta.get("extra", "{}")),
    }
    return lora, LoraConfig.from_dict(json.loads(meta["lora"])), info
