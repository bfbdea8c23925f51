"""`Backbone`: a GGUF model loaded for jax, with its tokenizer and checksum, in one object."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowc.backbone.config import ModelConfig
from flowc.backbone.decode import decode_batch
from flowc.backbone.generate import Sample, generate
from flowc.backbone.gguf_io import GGUFModelFile
from flowc.backbone.lora import LoraConfig
from flowc.backbone.model import Params, load_params
from flowc.backbone.tokenizer import Tokenizer


def resolve_model_path(model: str | Path) -> Path:
    """A `.gguf` path as given, or the file of a local profile name such as "smollm2"."""
    text = str(model)
    if text.endswith(".gguf") or Path(text).is_file():
        return Path(text)
    from flowc.runtime.local_profiles import gguf_path

    return gguf_path(text.removeprefix("local/"))


@dataclass
class Backbone:
    """A loaded model: dequantized float32 parameters, config, tokenizer and the source file."""

    file: GGUFModelFile
    config: ModelConfig
    params: Params
    tokenizer: Tokenizer

    @classmethod
    def load(cls, model: str | Path = "smollm2") -> Backbone:
        """Load a GGUF file, or a local profile ("smollm2", "local/smollm2", "qwen-coder-0.5b")."""
        f = GGUFModelFile(resolve_model_path(model))
        return cls(file=f, config=f.config, params=load_params(f), tokenizer=Tokenizer.from_metadata(f.metadata))

    @property
    def sha256(self) -> str:
        """Checksum of the base GGUF file."""
        return self.file.sha256

    @property
    def end_of_turn_id(self) -> int:
        """The token that ends an assistant turn (the EOS token of chat-tuned GGUFs)."""
        eos = self.tokenizer.eos_id
        return 0 if eos is None else eos

    def chat_prompt_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Tokens of a chat prompt ending with the assistant header, as the runtime renders it."""
        return self.tokenizer.encode(self.tokenizer.render_chat(messages, add_generation_prompt=True))

    def generate(
        self,
        prompt_ids: Sequence[int],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        n: int = 1,
        seed: int = 0,
        lora: Any = None,
        lora_cfg: LoraConfig | None = None,
    ) -> list[Sample]:
        """Continue a prompt (greedy by default), stopping where llama.cpp stops (`tokenizer.eog_ids`)."""
        return generate(
            self.params,
            self.config,
            prompt_ids,
            max_new_tokens=max_new_tokens,
            stop_ids=self.tokenizer.eog_ids,
            temperature=temperature,
            n=n,
            seed=seed,
            lora=lora,
            lora_scale=lora_cfg.scale if lora_cfg else 1.0,
        )

    def generate_batch(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        seed: int = 0,
        n: int = 1,
        lora: Any = None,
        lora_cfg: LoraConfig | None = None,
    ) -> list[Sample]:
        """Continue several different prompts (`n` samples each) in one compiled decode loop (`decode.py`)."""
        return decode_batch(
            self.params,
            self.config,
            prompts,
            max_new_tokens=max_new_tokens,
            stop_ids=self.tokenizer.eog_ids,
            temperature=temperature,
            seed=seed,
            n=n,
            lora=lora,
            lora_scale=lora_cfg.scale if lora_cfg else 1.0,
        )

    def chat(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_new_tokens: int = 64,
        lora: Any = None,
        lora_cfg: LoraConfig | None = None,
    ) -> str:
        """The greedy reply to chat messages, as text."""
        sample = self.generate(
            self.chat_prompt_ids(messages), max_new_tokens=max_new_tokens, lora=lora, lora_cfg=lora_cfg
        )[0]
        return self.tokenizer.decode(sample.ids)
