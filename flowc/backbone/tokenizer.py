"""The byte-level BPE tokenizer stored in a GGUF file, reproducing llama.cpp's tokenization.

llama.cpp splits text in three stages, and so does this: (1) special tokens (control and
user-defined entries of the vocabulary) are cut out verbatim; (2) each remaining fragment is
pre-tokenized by the regexes of the file's `tokenizer.ggml.pre` type, applied one after the other
(each regex splits the pieces the previous one left, keeping both matches and the text between
them); (3) every piece is mapped to GPT-2's printable byte alphabet and merged by BPE rank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import regex  # type: ignore[import-untyped]  # no stubs; a dependency of litellm (tiktoken)

from flowc.errors import FlowcError

_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_QWEN2 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3 = (
    r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# The pre-tokenizer regexes of llama.cpp (src/llama-vocab.cpp) for the pre-types we support.
PRE_TOKENIZERS: dict[str, tuple[str, ...]] = {
    "smollm": (r"\p{N}", _GPT2),
    "starcoder": (r"\p{N}", _GPT2),
    "refact": (r"\p{N}", _GPT2),
    "gpt-2": (_GPT2,),
    "default": (_GPT2,),
    "qwen2": (_QWEN2,),
    "llama-bpe": (_LLAMA3,),
}

_CONTROL, _USER_DEFINED = 3, 4
# Texts llama.cpp treats as end-of-generation when present in the vocabulary (llama-vocab.cpp).
_EOG_TEXTS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|end_of_text|>")


@lru_cache(maxsize=1)
def _byte_alphabet() -> tuple[dict[int, str], dict[str, int]]:
    """GPT-2's reversible map from the 256 bytes to printable unicode characters."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAC + 1)) + list(range(0xAE, 0xFF + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    enc = {b: chr(c) for b, c in zip(printable, chars)}
    return enc, {c: b for b, c in enc.items()}


def _split_keep(pattern: Any, pieces: list[str]) -> list[str]:
    """Split every piece by `pattern`, keeping the matches and the text between them."""
    out: list[str] = []
    for piece in pieces:
        start = 0
        for m in pattern.finditer(piece):
            if m.start() > start:
                out.append(piece[start : m.start()])
            if m.end() > m.start():
                out.append(m.group())
            start = m.end()
        if start < len(piece):
            out.append(piece[start:])
    return out


@dataclass
class Tokenizer:
    """A GGUF byte-level BPE tokenizer. Build it with `Tokenizer.from_metadata(gguf.metadata)`."""

    tokens: list[str]
    merges: list[str]
    token_types: list[int]
    pre: str
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    chat_template: str | None = None
    _ids: dict[str, int] = field(init=False, repr=False)
    _ranks: dict[tuple[str, str], int] = field(init=False, repr=False)
    _special: Any = field(init=False, repr=False)
    _patterns: list[Any] = field(init=False, repr=False)
    _cache: dict[str, list[int]] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        if self.pre not in PRE_TOKENIZERS:
            raise FlowcError(
                "artifact-invalid",
                f"tokenizer pre-type '{self.pre}' is not supported",
                hint=f"supported: {', '.join(sorted(PRE_TOKENIZERS))}",
            )
        self._ids = {t: i for i, t in enumerate(self.tokens)}
        self._ranks = {}
        for rank, m in enumerate(self.merges):
            a, _, b = m.partition(" ")
            self._ranks[(a, b)] = rank
        specials = sorted(
            (t for t, ty in zip(self.tokens, self.token_types) if ty in (_CONTROL, _USER_DEFINED) and t),
            key=len,
            reverse=True,
        )
        self._special = regex.compile("|".join(regex.escape(s) for s in specials)) if specials else None
        self._patterns = [regex.compile(p) for p in PRE_TOKENIZERS[self.pre]]

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Tokenizer:
        """Read the tokenizer keys of a GGUF header."""
        model = meta.get("tokenizer.ggml.model")
        if model != "gpt2":
            raise FlowcError(
                "artifact-invalid",
                f"tokenizer model '{model}' is not supported (only byte-level BPE, 'gpt2')",
                hint="use a model with a byte-level BPE vocabulary",
            )
        tokens = list(meta["tokenizer.ggml.tokens"])
        bos = meta.get("tokenizer.ggml.bos_token_id")
        eos = meta.get("tokenizer.ggml.eos_token_id")
        return cls(
            tokens=tokens,
            merges=list(meta.get("tokenizer.ggml.merges", [])),
            token_types=list(meta.get("tokenizer.ggml.token_type", [1] * len(tokens))),
            pre=str(meta.get("tokenizer.ggml.pre", "default")),
            bos_id=None if bos is None else int(bos),
            eos_id=None if eos is None else int(eos),
            add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", False)),
            chat_template=meta.get("tokenizer.chat_template"),
        )

    @property
    def vocab_size(self) -> int:
        """Number of entries in the vocabulary."""
        return len(self.tokens)

    def encode(self, text: str, *, add_special: bool = False, parse_special: bool = True) -> list[int]:
        """Token ids of `text`, as llama.cpp's `llama_tokenize(text, add_special, parse_special)`.

        Args:
            text: the text to tokenize.
            add_special: prepend BOS when the model asks for it (`tokenizer.ggml.add_bos_token`).
            parse_special: treat special-token strings such as `<|im_start|>` as those tokens.
        """
        ids: list[int] = []
        if add_special and self.add_bos and self.bos_id is not None:
            ids.append(self.bos_id)
        fragments: list[tuple[str, bool]] = []
        if parse_special and self._special is not None:
            start = 0
            for m in self._special.finditer(text):
                fragments.append((text[start : m.start()], False))
                fragments.append((m.group(), True))
                start = m.end()
            fragments.append((text[start:], False))
        else:
            fragments.append((text, False))
        for frag, special in fragments:
            if special:
                ids.append(self._ids[frag])
            elif frag:
                pieces = [frag]
                for pat in self._patterns:
                    pieces = _split_keep(pat, pieces)
                for piece in pieces:
                    ids.extend(self._bpe(piece))
        return ids

    def _bpe(self, piece: str) -> list[int]:
        cached = self._cache.get(piece)
        if cached is not None:
            return cached
        enc, _ = _byte_alphabet()
        word = [enc[b] for b in piece.encode("utf-8")]
        while len(word) > 1:
            best = None
            for i in range(len(word) - 1):
                r = self._ranks.get((word[i], word[i + 1]))
                if r is not None and (best is None or r < best[0]):
                    best = (r, i)
            if best is None:
                break
            i = best[1]
            word = [*word[:i], word[i] + word[i + 1], *word[i + 2 :]]
        out: list[int] = []
        for sym in word:
            tid = self._ids.get(sym)
            if tid is not None:
                out.append(tid)
            else:  # a merge result missing from the vocabulary: fall back to its bytes, as llama.cpp
                out.extend(self._ids[ch] for ch in sym)
        if len(self._cache) < 100_000:
            self._cache[piece] = out
        return out

    @property
    def eog_ids(self) -> tuple[int, ...]:
        """Tokens that end generation: EOS plus the end-of-turn markers llama.cpp also stops at."""
        ids = {self.eos_id} if self.eos_id is not None else set()
        ids.update(self._ids[t] for t in _EOG_TEXTS if t in self._ids)
        return tuple(sorted(ids))

    def is_special(self, token_id: int) -> bool:
        """Whether a token is a control or user-defined token."""
        return self.token_types[token_id] in (_CONTROL, _USER_DEFINED)

    def token_bytes(self, token_id: int) -> bytes:
        """The raw bytes of one token (a token may hold part of a UTF-8 character)."""
        tok = self.tokens[int(token_id)]
        if self.is_special(int(token_id)):
            return tok.encode("utf-8")
        _, dec = _byte_alphabet()
        return bytes(dec[c] for c in tok)

    def decode(self, ids: Sequence[int], *, skip_special: bool = True) -> str:
        """Text of token ids; invalid UTF-8 (a character cut between tokens) becomes U+FFFD."""
        _, dec = _byte_alphabet()
        buf = bytearray()
        for i in ids:
            tok = self.tokens[int(i)]
            if self.is_special(int(i)):
                if not skip_special:
                    buf.extend(tok.encode("utf-8"))
                continue
            buf.extend(dec[c] for c in tok)
        return buf.decode("utf-8", errors="replace")

    def render_chat(self, messages: Sequence[dict[str, str]], *, add_generation_prompt: bool = True) -> str:
        """The prompt text for chat messages, from the file's own Jinja chat template (sandboxed)."""
        if not self.chat_template:
            raise FlowcError(
                "artifact-invalid",
                "the model file has no chat template",
                hint="use an instruction-tuned model",
            )
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        tmpl = env.from_string(self.chat_template)
        return tmpl.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self.tokens[self.bos_id] if self.bos_id is not None else "",
            eos_token=self.tokens[self.eos_id] if self.eos_id is not None else "",
        )
