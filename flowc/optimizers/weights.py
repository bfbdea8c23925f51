"""Weights as params: what a weight-training optimizer (JADE, POQD) needs from flowc, without jax.

    models = trainable_models(compiled)              # the `trainable: true` local models
    store = AdapterStore(run_dir)
    m = models[0]                                    # m.base_path, m.base_sha256, m.adapter (current)
    trainer = LoraTrainer.create(Backbone.load(m.base_path), ...)   # in the optimizer (jax)
    ...train...
    trainer.save(store.scratch(m, f"step{step}"))    # flowc.backbone writes the safetensors
    published = store.publish(m, store.scratch(m, f"step{step}"))
    patch_values = {m.param: published.value}        # {"path": ..., "sha256": ...}
    candidate = compiled.with_params(patch_values)   # served with the adapter from here on

`publish` checks the adapter was trained on the model's base, files it in the run directory under
its content hash (`<run_dir>/adapters/<model>-<sha12>.safetensors`) with the llama.cpp LoRA GGUF
the runtime serves beside it (exported here unless the caller passes one), and returns the param
value. Publishing the same adapter twice (a resumed job) is a no-op that returns the same value.
This module imports no jax: `publish` reaches `flowc.backbone` only to export a missing GGUF.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.base import trainable_params
from flowc.runtime.local_provider import resolve_model_path
from flowc.spec.adapters import (
    AdapterRef,
    canonical_safetensors,
    file_sha256,
    read_metadata,
    served_path,
    short,
)


@dataclass(frozen=True)
class TrainableModel:
    """A model whose weights an optimizer may train.

    Attributes:
        name: the model's declared name in the spec.
        param: its weights param, `<name>.weights`.
        model_id: the `local/...` id.
        base_path: the base GGUF file (what `Backbone.load` takes).
        base_sha256: that file's sha256, which every adapter trained on it records.
        adapter: the adapter the pipeline is served with now (training may start from it), or None.
    """

    name: str
    param: str
    model_id: str
    base_path: Path
    base_sha256: str
    adapter: AdapterRef | None


def trainable_models(
    compiled: CompiledPipeline, only: Sequence[str] | None = None, frozen: Sequence[str] = ()
) -> list[TrainableModel]:
    """The pipeline's trainable models (`trainable: true`), restricted by `only`/`frozen` param names.

    Raises:
        FlowcError: model-file-not-found when a model's base file is not installed.
    """
    out = []
    for param in trainable_params(compiled, only, frozen, kinds=("weights",)):
        name = param.rsplit(".", 1)[0]
        model_id = compiled.spec.models[name].id
        base = resolve_model_path(model_id).resolve()
        out.append(TrainableModel(name, param, model_id, base, file_sha256(base), compiled.adapters.get(name)))
    return out


@dataclass(frozen=True)
class PublishedAdapter:
    """An adapter filed in a run directory: the param value and the files behind it."""

    path: Path
    sha256: str
    served: Path
    served_sha256: str

    @property
    def value(self) -> dict[str, str]:
        """The `<model>.weights` param value that names this adapter."""
        return {"path": str(self.path), "sha256": self.sha256}


class AdapterStore:
    """The adapters of one optimization job, under `<run_dir>/adapters/`."""

    def __init__(self, run_dir: str | Path) -> None:
        # absolute: a weights value names its file by path, resolved against the spec's folder
        # when relative, so a relative --run-dir would point elsewhere
        self.dir = Path(run_dir).resolve() / "adapters"
        self.dir.mkdir(parents=True, exist_ok=True)

    def scratch(self, model: TrainableModel, tag: str) -> Path:
        """Where a trainer may save an adapter before it is published (`tag`: e.g. the step)."""
        (self.dir / "scratch").mkdir(exist_ok=True)
        return self.dir / "scratch" / f"{model.name}-{tag}.safetensors"

    def publish(self, model: TrainableModel, trained: str | Path, served: str | Path | None = None) -> PublishedAdapter:
        """File the adapter `trained` (safetensors from flowc.backbone) under its content hash.

        Args:
            model: the model it was trained for.
            trained: the adapter file.
            served: its llama.cpp LoRA GGUF, if the caller exported one already; otherwise it is
                exported here (this needs the `jax` extra).

        Raises:
            FlowcError: adapter-invalid (not a flowc adapter), adapter-base-mismatch (trained on
                another base than the model's).
        """
        trained = Path(trained)
        meta = read_metadata(trained)
        if meta["base_sha256"] != model.base_sha256:
            raise FlowcError(
                "adapter-base-mismatch",
                f"{trained.name} was trained on another base than model '{model.name}' ({model.model_id})",
                hint=f"the adapter's base has sha256 {short(meta['base_sha256'])}…, the model's "
                f"{short(model.base_sha256)}…: train on Backbone.load(model.base_path)",
            )
        blob = canonical_safetensors(trained.read_bytes())
        sha = hashlib.sha256(blob).hexdigest()
        dest = self.dir / f"{model.name}-{short(sha)}.safetensors"
        if not (dest.is_file() and file_sha256(dest) == sha):
            _write_atomic(dest, blob)
        gguf = served_path(dest)
        if served is not None:
            if Path(served).resolve() != gguf.resolve():
                _copy_atomic(Path(served), gguf)
        elif not gguf.is_file():
            _export_served(model, dest, gguf, sha)
        return PublishedAdapter(dest, sha, gguf, file_sha256(gguf))


def _export_served(model: TrainableModel, adapter: Path, out: Path, sha: str) -> None:
    """Write the llama.cpp LoRA GGUF of `adapter` (through flowc.backbone, which needs jax)."""
    try:
        from flowc.backbone.checkpoint import load_adapter
        from flowc.backbone.export import export_lora_adapter
        from flowc.backbone.gguf_io import GGUFModelFile
    except ModuleNotFoundError as e:
        raise FlowcError(
            "model-file-not-found",
            f"exporting the served GGUF of {adapter.name} needs the jax extra ({e.name} is missing)",
            hint="pip install 'flowc[jax]', or pass served= (a GGUF exported by LoraTrainer.export(kind='adapter'))",
        ) from e
    lora, lora_cfg, _ = load_adapter(adapter, expected_base_sha256=model.base_sha256)
    tmp = out.with_name(out.name + ".tmp")
    export_lora_adapter(GGUFModelFile(model.base_path), lora, lora_cfg, tmp, metadata={"flowc.adapter.sha256": sha})
    os.replace(tmp, out)


def _write_atomic(path: Path, blob: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(blob)
    os.replace(tmp, path)


def _copy_atomic(src: Path, dest: Path) -> None:
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
