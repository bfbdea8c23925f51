"""A `LoraTrainer`'s whole training state in one safetensors file: the adapter, the optimizer's
state (AdamW's moments and step count) and the trainer's step counter.

An adapter file (`checkpoint.save_adapter`) is what the runtime serves; this file is what an
optimizer that trains over many checkpointed steps (JADE, POQD) reloads on `--resume`, so the
resumed training continues with the same moments and ends with the same adapter as an
uninterrupted run. No pickle: the pytree's leaves are stored in order, and the tree's structure is
recorded so that a state of another LoRA configuration or optimizer is refused, not misread.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flowc.backbone.train import LoraTrainer
from flowc.errors import FlowcError

FORMAT = "flowc-train-state/1"


def _structure(trainer: LoraTrainer) -> str:
    return str(jax.tree.structure((trainer.lora, trainer.opt_state)))


def save_train_state(trainer: LoraTrainer, path: str | Path) -> Path:
    """Write the adapter, the optimizer state and the step count to `path`, atomically."""
    from safetensors.numpy import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree.leaves((trainer.lora, trainer.opt_state))
    tensors = {f"leaf{i:05d}": np.ascontiguousarray(np.asarray(x)) for i, x in enumerate(leaves)}
    meta = {
        "format": FORMAT,
        "steps": str(trainer.steps),
        "base_sha256": trainer.backbone.sha256,
        "lora": json.dumps(trainer.lora_cfg.to_dict()),
        "structure": _structure(trainer),
    }
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(save(tensors, metadata=meta))
    os.replace(tmp, path)
    return path


def load_train_state(trainer: LoraTrainer, path: str | Path) -> None:
    """Restore what `save_train_state` wrote into `trainer` (same base, LoRA config and optimizer).

    Raises:
        FlowcError: model-file-not-found (no file), artifact-invalid (not a training state, or one of
            another configuration), model-checksum-mismatch (trained on another base).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FlowcError("model-file-not-found", f"no training state at {path}", hint="check the run directory")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise FlowcError("artifact-invalid", f"{path} is not a safetensors file: {e}", hint="delete it") from e
    if meta.get("format") != FORMAT:
        raise FlowcError("artifact-invalid", f"{path} is not a flowc training state", hint="delete it")
    if meta.get("base_sha256") != trainer.backbone.sha256:
        raise FlowcError(
            "model-checksum-mismatch",
            f"the training state {path.name} belongs to another base model",
            hint="resume with the model the job started with",
        )
    if meta.get("structure") != _structure(trainer) or meta.get("lora") != json.dumps(trainer.lora_cfg.to_dict()):
        raise FlowcError(
            "artifact-invalid",
            f"the training state {path.name} was written for another LoRA configuration or optimizer",
            hint="resume with the settings the job started with, or start a new run directory",
        )
    treedef = jax.tree.structure((trainer.lora, trainer.opt_state))
    leaves = [jnp.asarray(tensors[f"leaf{i:05d}"]) for i in range(len(tensors))]
    trainer.lora, trainer.opt_state = jax.tree.unflatten(treedef, leaves)
    trainer.steps = int(meta["steps"])


__all__ = ("load_train_state", "save_train_state")
