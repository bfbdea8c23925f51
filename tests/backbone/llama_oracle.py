"""The llama.cpp oracle: a GGUF file served in process by xllamacpp, asked for tokens and log-probs.

Tests and the benchmark call xllamacpp directly here (not through the runtime's provider) so that
the comparison is with llama.cpp itself. The server binds 127.0.0.1 on a free port; its `/tokenize`
and `/apply-template` HTTP endpoints expose llama.cpp's tokenizer and chat template.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx


class LlamaOracle:
    """One xllamacpp server over one GGUF file (2 threads, greedy by default)."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_ctx: int = 1024,
        threads: int = 2,
        exact: bool = False,
        lora: str | Path | None = None,
    ) -> None:
        import xllamacpp

        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_ctx = n_ctx
        params.n_parallel = 1
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        if exact:
            # By default llama.cpp keeps keys/values in float16 and its CPU flash attention rounds
            # through float16 too (~1e-2 in log-probs); with both off, an unquantized model
            # matches jax to float32 rounding.
            params.cache_type_k = xllamacpp.ggml_type.GGML_TYPE_F32
            params.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
            params.flash_attn_type = xllamacpp.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        if lora is not None:
            params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(str(lora), 1.0)]
        self._server: Any = xllamacpp.Server(params)
        self.address = str(self._server.listening_address)

    def close(self) -> None:
        """Stop the server (dropping the object shuts llama.cpp's threads down)."""
        self._server = None

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's tokens of `text` (special tokens parsed, no BOS added)."""
        r = httpx.post(
            self.address + "/tokenize",
            json={"content": text, "add_special": False, "parse_special": True},
            timeout=30,
        )
        r.raise_for_status()
        return [int(t) for t in r.json()["tokens"]]

    def apply_template(self, messages: Sequence[dict[str, str]]) -> str:
        """The prompt llama.cpp renders for chat messages (with the assistant header)."""
        r = httpx.post(self.address + "/apply-template", json={"messages": list(messages)}, timeout=30)
        r.raise_for_status()
        return str(r.json()["prompt"])

    def complete(self, prompt: Sequence[int] | str, *, n_predict: int, n_probs: int = 0) -> dict[str, Any]:
        """A greedy completion; with `n_probs`, the top log-probs at every generated position."""
        req: dict[str, Any] = {
            "prompt": list(prompt) if not isinstance(prompt, str) else prompt,
            "n_predict": n_predict,
            "temperature": 0.0,
            "top_k": 1,
            "cache_prompt": False,
        }
        if n_probs:
            req["n_probs"] = n_probs
        return dict(self._server.handle_completions(req))

    def greedy_bytes(self, prompt_ids: Sequence[int], n_predict: int) -> bytes:
        """The bytes of the greedy continuation (it stops early at an end-of-generation token).

        Bytes, not token ids: the server folds a token that ends inside a UTF-8 character into
        the next token's log-prob entry, so the ids it reports can skip tokens; bytes cannot.
        """
        r = self.complete(prompt_ids, n_predict=n_predict, n_probs=1)
        return b"".join(bytes(e["bytes"]) for e in r["choices"][0]["logprobs"]["content"])

    def top_logprobs(self, prompt_ids: Sequence[int], n: int = 20) -> dict[int, float]:
        """The `n` most likely next tokens after the prompt, with their log-probabilities."""
        r = self.complete(prompt_ids, n_predict=1, n_probs=n)
        top = r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        return {int(e["id"]): float(e["logprob"]) for e in top}

    def chat(self, messages: Sequence[dict[str, str]], *, max_tokens: int = 32) -> str:
        """A greedy chat reply, rendered by the server with the file's chat template."""
        r = self._server.handle_chat_completions(
            {"messages": list(messages), "max_tokens": max_tokens, "temperature": 0.0, "top_k": 1}
        )
        return str(r["choices"][0]["message"]["content"])
