"""The GGUF tokenizer reproduces llama.cpp's tokens and chat template exactly (no jax needed)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

pytest.importorskip("gguf")
pytest.importorskip("xllamacpp")

from flowc.backbone.tokenizer import Tokenizer
from flowc.errors import FlowcError

TEXTS = [
    "Hello  world 12345 éà 🙂",
    "<|im_start|>user\nWhat's 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "  leading spaces\n\n\ttabs  trailing   ",
    "don't I'LL we've 3.14159 $100,000 -42",
    "日本語のテキスト and Ünïcödé — “quotes” ½ Ⅻ ٣",
    "def f(x):\n    return x**2  # comment\r\n",
    "a" * 50 + " " + "ab" * 30,
    "<answer>Paris</answer> <|endoftext|> <repo_name>x",
    "",
    "\n\n\n",
    "URL: https://example.com/a?b=c&d=e#f",
    "Emoji combos: 👩‍👩‍👧 🇫🇷 ✔️",
]


@pytest.fixture(scope="module")
def tokenizer(smollm_file: Any) -> Tokenizer:
    return Tokenizer.from_metadata(smollm_file.metadata)


@pytest.mark.parametrize("text", TEXTS)
def test_tokens_match_llama_cpp(tokenizer: Tokenizer, oracle_q4: Any, text: str) -> None:
    assert tokenizer.encode(text) == oracle_q4.tokenize(text)


@pytest.mark.parametrize("text", TEXTS)
def test_decode_inverts_encode(tokenizer: Tokenizer, text: str) -> None:
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids, skip_special=False) == text


def test_special_tokens_are_parsed_only_when_asked(tokenizer: Tokenizer) -> None:
    text = "<|im_start|>"
    assert tokenizer.encode(text) == [1]
    literal = tokenizer.encode(text, parse_special=False)
    assert len(literal) > 1 and 1 not in literal
    assert tokenizer.decode(tokenizer.encode("<|im_end|>ok")) == "ok"
    assert tokenizer.eog_ids == (0, 2)  # <|endoftext|> and <|im_end|>, where llama.cpp stops


def test_chat_template_matches_llama_cpp(tokenizer: Tokenizer, oracle_q4: Any) -> None:
    for messages in (
        [{"role": "user", "content": "hi"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}],
    ):
        assert tokenizer.render_chat(messages) == oracle_q4.apply_template(messages)


def test_unsupported_tokenizer_is_a_flowc_error(smollm_file: Any) -> None:
    meta = dict(smollm_file.metadata)
    meta["tokenizer.ggml.pre"] = "no-such-pre"
    with pytest.raises(FlowcError) as e:
        Tokenizer.from_metadata(meta)
    assert e.value.code == "artifact-invalid"
    meta["tokenizer.ggml.model"] = "llama"
    with pytest.raises(FlowcError):
        Tokenizer.from_metadata(meta)


def test_import_flowc_does_not_import_jax() -> None:
    code = "import sys, flowc, flowc.backbone; assert 'jax' not in sys.modules and 'optax' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
