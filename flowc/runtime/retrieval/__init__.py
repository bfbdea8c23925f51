"""Retrieval over a `Corpus`: BM25, dense (MiniLM) and multi-vector MaxSim over sub-queries.

    from flowc.runtime.corpus import load_corpus
    from flowc.runtime.retrieval import make_retriever

    retriever = make_retriever("bm25", load_corpus("pipelines/data/tiny_wiki.jsonl"))
    hits = retriever.search("Who founded the band?", k=5)   # list[Hit], best first

Importing this package is cheap: bm25s, onnxruntime and tokenizers are imported only when a
retriever or encoder that needs them is built. See `base.py` for the contract.
"""

from flowc.runtime.corpus import Doc, Hit
from flowc.runtime.retrieval.base import Encoder, Retriever, check_k, top_k_hits
from flowc.runtime.retrieval.bm25 import BM25Retriever
from flowc.runtime.retrieval.cache import default_cache_dir
from flowc.runtime.retrieval.dense import DenseRetriever
from flowc.runtime.retrieval.encoder import MiniLMEncoder
from flowc.runtime.retrieval.factory import METHODS, Method, make_retriever
from flowc.runtime.retrieval.maxsim import MaxSimRetriever, filter_subqueries, split_sentences

__all__ = [
    "METHODS",
    "BM25Retriever",
    "DenseRetriever",
    "Doc",
    "Encoder",
    "Hit",
    "MaxSimRetriever",
    "Method",
    "MiniLMEncoder",
    "Retriever",
    "check_k",
    "default_cache_dir",
    "filter_subqueries",
    "make_retriever",
    "split_sentences",
    "top_k_hits",
]
