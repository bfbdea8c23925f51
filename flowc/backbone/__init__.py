"""A trainable local backbone in jax: the embedded GGUF model's weights, LoRA training, export.

Needs the `jax` extra (`pip install 'flowc[jax]'`). Nothing here is imported by `import flowc`;
import the submodules you need, or the names below (loaded on first use):

- `Backbone.load("smollm2")`: parameters, tokenizer and checksum of a GGUF model.
- `LoraConfig`, `LoraTrainer`: LoRA adapters trained with optax (`sft_step`, `policy_step`).
- `chat_example`, `make_batch`: chat (prompt, completion) pairs to token batches.
- `decode_batch`: one compiled decode loop over different prompts (rollouts), with log-probs.
- `save_adapter`, `load_adapter`: safetensors files with config and base checksum.
- `export_merged`, `export_lora_adapter`: GGUF files the llama.cpp runtime serves.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowc.backbone.backbone import Backbone
    from flowc.backbone.batching import Example, TokenBatch, chat_example, make_batch
    from flowc.backbone.checkpoint import load_adapter, save_adapter
    from flowc.backbone.config import ModelConfig
    from flowc.backbone.decode import decode_batch
    from flowc.backbone.export import export_lora_adapter, export_merged
    from flowc.backbone.generate import Sample
    from flowc.backbone.lora import LoraConfig
    from flowc.backbone.tokenizer import Tokenizer
    from flowc.backbone.train import LoraTrainer, PolicyBatch

_EXPORTS = {
    "Backbone": "backbone",
    "Example": "batching",
    "TokenBatch": "batching",
    "chat_example": "batching",
    "make_batch": "batching",
    "load_adapter": "checkpoint",
    "save_adapter": "checkpoint",
    "ModelConfig": "config",
    "decode_batch": "decode",
    "export_lora_adapter": "export",
    "export_merged": "export",
    "Sample": "generate",
    "LoraConfig": "lora",
    "Tokenizer": "tokenizer",
    "LoraTrainer": "train",
    "PolicyBatch": "train",
}

__all__ = [
    "Backbone",
    "Example",
    "LoraConfig",
    "LoraTrainer",
    "ModelConfig",
    "PolicyBatch",
    "Sample",
    "TokenBatch",
    "Tokenizer",
    "chat_example",
    "decode_batch",
    "export_lora_adapter",
    "export_merged",
    "load_adapter",
    "make_batch",
    "save_adapter",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flowc.backbone' has no attribute {name!r}")
    return getattr(importlib.import_module(f"flowc.backbone.{module}"), name)
