"""Writing GGUF files the llama.cpp runtime serves: a merged model, or a llama.cpp LoRA adapter.

The merged export copies the base file's header (tokenizer, chat template, hyper-parameters) and
every tensor the adapter does not touch byte for byte, still quantized; only the adapted
projections are rewritten, in float16 by default. Re-quantizing them to the base's 4-bit format
would erase much of a small LoRA update, and the few touched matrices cost little at F16.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from flowc.backbone.config import ModelConfig
from flowc.backbone.gguf_io import GGUFModelFile
from flowc.backbone.lora import LoraConfig
from flowc.backbone.model import PROJECTIONS
from flowc.errors import FlowcError

TensorDType = Literal["f32", "f16"]
_FILE_TYPE = {"f32": 0, "f16": 1}  # llama.cpp's LlamaFileType for all-F32 / mostly-F16 files


def _encode(arr: np.ndarray, dtype: TensorDType) -> np.ndarray:
    return arr.astype(np.float16 if dtype == "f16" else np.float32)


def write_gguf(
    src: GGUFModelFile,
    out: str | Path,
    *,
    replace: Mapping[str, np.ndarray] | None = None,
    replace_dtype: TensorDType = "f16",
    all_dtype: TensorDType | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Copy `src` to `out`, replacing some tensors.

    Args:
        src: the base model file.
        out: where to write (parent folders are created; an existing file is overwritten).
        replace: tensor name -> float32 array in the reader's `(n_out, n_in)` layout.
        replace_dtype: storage type of the replaced tensors.
        all_dtype: if set, dequantize and store *every* tensor in this type (an unquantized file,
            used as a tight numerical oracle); 1-D tensors always stay float32, as llama.cpp wants.
        metadata: extra string keys for the header (provenance, e.g. the adapter's checksum).

    Returns:
        The path written.
    """
    import gguf

    replace = dict(replace or {})
    unknown = sorted(set(replace) - set(src.tensor_names))
    if unknown:
        raise FlowcError("artifact-invalid", f"no tensors named {unknown[:3]} in {src.path.name}", hint="check names")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = src.metadata
    writer = gguf.GGUFWriter(str(out), str(meta["general.architecture"]))
    for name, value in meta.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue  # written by GGUFWriter itself
        vtype, sub = src.field_type(name)
        if name == "general.file_type" and all_dtype is not None:
            value = _FILE_TYPE[all_dtype]
        writer.add_key_value(name, value, vtype, sub_type=sub)
    for key, text in (metadata or {}).items():
        writer.add_string(key, text)
    for name in src.tensor_names:
        t = src.raw_tensor(name)
        if name in replace:
            arr = np.asarray(replace[name], dtype=np.float32)
            expected = tuple(int(x) for x in reversed(t.shape.tolist()))
            if arr.shape != expected:
                raise FlowcError(
                    "artifact-invalid",
                    f"tensor '{name}' has shape {arr.shape}, the base has {expected}",
                    hint="export an adapter trained on this base model",
                )
            writer.add_tensor(name, _encode(arr, replace_dtype))
        elif all_dtype is not None:
            arr = src.tensor(name)
            writer.add_tensor(name, arr if arr.ndim == 1 else _encode(arr, all_dtype))
        else:
            writer.add_tensor(name, np.asarray(t.data), raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def merged_tensors(src: GGUFModelFile, lora: Any, lora_cfg: LoraConfig) -> dict[str, np.ndarray]:
    """The adapted projections `W + scale * A @ B` of every layer, as GGUF-layout float32 arrays.

    `W` is the base file's own dequantized tensor, so untouched bits of the base are kept exactly.
    """
    out: dict[str, np.ndarray] = {}
    for key, ad in lora.items():
        a, b = np.asarray(ad["a"], np.float32), np.asarray(ad["b"], np.float32)
        for i in range(a.shape[0]):
            name = f"blk.{i}.{PROJECTIONS[key]}.weight"
            delta = lora_cfg.scale * (a[i] @ b[i])  # (n_in, n_out)
            out[name] = src.tensor(name) + delta.T
    return out


def export_merged(
    src: GGUFModelFile,
    lora: Any,
    lora_cfg: LoraConfig,
    out: str | Path,
    *,
    dtype: TensorDType = "f16",
    untouched: TensorDType | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write a standalone GGUF with the adapter merged; serve it as `local/gguf:<path>`.

    Args:
        src, lora, lora_cfg: the base file and the adapter trained on it.
        out: the file to write.
        dtype: storage of the merged projections.
        untouched: `None` copies the other tensors as they are (quantized, small, fast); "f16" or
            "f32" stores them unquantized, so llama.cpp computes what jax computes (bigger, slower).
        metadata: extra header strings (the base checksum and LoRA shape are always recorded).
    """
    meta = {"flowc.base.sha256": src.sha256, "flowc.lora": _describe(lora_cfg), **(metadata or {})}
    return write_gguf(
        src,
        out,
        replace=merged_tensors(src, lora, lora_cfg),
        replace_dtype=dtype,
        all_dtype=untouched,
        metadata=meta,
    )


def export_lora_adapter(
    src: GGUFModelFile,
    lora: Any,
    lora_cfg: LoraConfig,
    out: str | Path,
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write the adapter alone in llama.cpp's LoRA GGUF format (for `--lora`/`lora_adapters`).

    llama.cpp adds `scale * B(A x)` with `scale = adapter.lora.alpha / rank`, the same update as here.
    """
    import gguf

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), str(src.metadata["general.architecture"]))
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", float(lora_cfg.alpha))
    writer.add_string("flowc.base.sha256", src.sha256)
    for key, text in (metadata or {}).items():
        writer.add_string(key, text)
    for key, ad in lora.items():
        a, b = np.asarray(ad["a"], np.float32), np.asarray(ad["b"], np.float32)
        for i in range(a.shape[0]):
            base = f"blk.{i}.{PROJECTIONS[key]}.weight"
            # ggml shapes: lora_a is [n_in, rank] (numpy (rank, n_in)), lora_b is [rank, n_out].
            writer.add_tensor(f"{base}.lora_a", np.ascontiguousarray(a[i].T))
            writer.add_tensor(f"{base}.lora_b", np.ascontiguousarray(b[i].T))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _describe(lora_cfg: LoraConfig) -> str:
    return f"rank={lora_cfg.rank} alpha={lora_cfg.alpha} targets={','.join(lora_cfg.targets)}"


def export_params(
    params: Any,
    cfg: ModelConfig,
    out: str | Path,
    *,
    tokenizer_from: GGUFModelFile,
    dtype: TensorDType = "f32",
    name: str = "flowc backbone",
) -> Path:
    """Write a complete GGUF from a parameter pytree (all weights in `dtype`, norms in float32).

    The hyper-parameters come from `cfg`; the tokenizer and chat template are copied from
    `tokenizer_from`. Used for models whose every weight changed (full fine-tunes) and for tiny
    random models that check the architecture against llama.cpp in seconds.
    """
    import gguf

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    arch = cfg.arch
    writer = gguf.GGUFWriter(str(out), arch)
    writer.add_string("general.name", name)
    writer.add_uint32("general.file_type", _FILE_TYPE[dtype])
    writer.add_uint32(f"{arch}.vocab_size", cfg.vocab_size)
    writer.add_uint32(f"{arch}.context_length", cfg.context_length)
    writer.add_uint32(f"{arch}.embedding_length", cfg.dim)
    writer.add_uint32(f"{arch}.block_count", cfg.n_layers)
    writer.add_uint32(f"{arch}.feed_forward_length", cfg.hidden_dim)
    writer.add_uint32(f"{arch}.attention.head_count", cfg.n_heads)
    writer.add_uint32(f"{arch}.attention.head_count_kv", cfg.n_kv_heads)
    writer.add_uint32(f"{arch}.attention.key_length", cfg.head_dim)
    writer.add_uint32(f"{arch}.attention.value_length", cfg.head_dim)
    writer.add_uint32(f"{arch}.rope.dimension_count", cfg.head_dim)
    writer.add_float32(f"{arch}.rope.freq_base", cfg.rope_theta)
    writer.add_float32(f"{arch}.attention.layer_norm_rms_epsilon", cfg.rms_eps)
    for key, value in tokenizer_from.metadata.items():
        if key.startswith("tokenizer."):
            vtype, sub = tokenizer_from.field_type(key)
            writer.add_key_value(key, value, vtype, sub_type=sub)

    def add(tensor_name: str, arr: Any, *, matrix: bool) -> None:
        a = np.asarray(arr, np.float32)
        writer.add_tensor(tensor_name, _encode(a.T if matrix else a, dtype) if a.ndim > 1 else a)

    add("token_embd.weight", np.asarray(params["embed"]).T, matrix=True)  # stored (V, D) already
    add("output_norm.weight", params["norm"], matrix=False)
    if not cfg.tied_embeddings:
        add("output.weight", params["lm_head"], matrix=True)
    layers = params["layers"]
    bias_names = {"bq": "attn_q", "bk": "attn_k", "bv": "attn_v"}
    for i in range(cfg.n_layers):
        add(f"blk.{i}.attn_norm.weight", layers["attn_norm"][i], matrix=False)
        add(f"blk.{i}.ffn_norm.weight", layers["ffn_norm"][i], matrix=False)
        for key, tensor in PROJECTIONS.items():
            add(f"blk.{i}.{tensor}.weight", layers[key][i], matrix=True)
        if cfg.qkv_bias:
            for key, tensor in bias_names.items():
                add(f"blk.{i}.{tensor}.bias", layers[key][i], matrix=False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out
