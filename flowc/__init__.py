"""flowc: a declarative pipeline language and compiler for compound AI systems.

The public API is re-exported lazily so that `import flowc` stays cheap (no litellm, no lark
until they are needed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["CompiledPipeline", "__version__", "compile", "load_spec"]

if TYPE_CHECKING:
    from flowc.compile import CompiledPipeline, compile, load_spec


def __getattr__(name: str) -> Any:
    if name in ("CompiledPipeline", "compile", "load_spec"):
        from flowc import compile as _compile_module

        return getattr(_compile_module, name)
    raise AttributeError(name)
