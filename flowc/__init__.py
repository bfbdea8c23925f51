"""flowc: a declarative pipeline language and compiler for compound AI systems.

import flowc
compiled = flowc.compile("pipelines/agentic_rag.flow")
"""

import flowc.syntax  # noqa: F401  (installs the reader of bindings and conditions the spec layer uses)
from flowc.compile import CompiledPipeline, compile, load_spec
from flowc.version import __version__

__all__ = ["CompiledPipeline", "__version__", "compile", "load_spec"]
