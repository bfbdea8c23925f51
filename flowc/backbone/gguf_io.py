"""Reading a GGUF file: its metadata, its tensors dequantized to float32, and its checksum.

The `gguf` package (llama.cpp's own Python reader) memory-maps the file and dequantizes every
llama.cpp block format; nothing here needs jax.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from flowc.backbone.config import ModelConfig, config_from_metadata
from flowc.errors import FlowcError


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks (GGUF files are hundreds of MB)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class GGUFModelFile:
    """A GGUF file opened for reading. `tensor(name)` dequantizes one tensor to float32.

    Tensors come back in numpy's row-major view of ggml's layout: a weight that maps `n_in -> n_out`
    has shape `(n_out, n_in)`.
    """

    path: Path
    _reader: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import gguf  # the jax extra; imported here so that `config` stays importable without it

        self.path = Path(self.path)
        if not self.path.is_file():
            raise FlowcError(
                "model-file-not-found",
                f"no GGUF file at {self.path}",
                hint="pass the path of an existing .gguf file",
            )
        try:
            self._reader = gguf.GGUFReader(str(self.path))
        except (ValueError, OSError) as e:
            raise FlowcError(
                "artifact-invalid",
                f"{self.path} is not a readable GGUF file: {e}",
                hint="re-export or re-download it",
            ) from e

    @cached_property
    def metadata(self) -> dict[str, Any]:
        """Every key/value of the header, decoded (strings as str, arrays as lists)."""
        out: dict[str, Any] = {}
        for name, fld in self._reader.fields.items():
            out[name] = fld.contents()
        return out

    @cached_property
    def tensor_names(self) -> list[str]:
        """Tensor names in file order."""
        return [t.name for t in self._reader.tensors]

    @cached_property
    def config(self) -> ModelConfig:
        """The decoder's hyper-parameters."""
        return config_from_metadata(self.metadata, set(self.tensor_names))

    @cached_property
    def sha256(self) -> str:
        """The file's checksum: adapters record it so they are never applied to another base."""
        return file_sha256(self.path)

    def raw_tensor(self, name: str) -> Any:
        """The reader's tensor record (type, shape, raw bytes), for copying it unchanged on export."""
        for t in self._reader.tensors:
            if t.name == name:
                return t
        raise FlowcError("artifact-invalid", f"{self.path.name} has no tensor '{name}'", hint="check the model file")

    def tensor(self, name: str) -> np.ndarray:
        """One tensor, dequantized to float32, shaped `(n_out, n_in)` for weights."""
        import gguf

        t = self.raw_tensor(name)
        data = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type)
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        return np.ascontiguousarray(data.reshape(shape), dtype=np.float32)

    def field_type(self, name: str) -> tuple[Any, Any]:
        """(value type, array element type or None) of a header key, for copying it on export."""
        fld = self._reader.fields[name]
        sub = fld.types[1] if len(fld.types) > 1 else None
        return fld.types[0], sub
