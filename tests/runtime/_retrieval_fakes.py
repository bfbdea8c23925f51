"""The model-free encoder of the retrieval tests (it lives in flowc.testing for every test suite)."""

from flowc.testing.retrieval_fakes import HashEncoder

__all__ = ["HashEncoder"]
