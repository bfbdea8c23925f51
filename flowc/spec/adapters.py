"""What a model's `adapter:` names: a LoRA adapter, the GGUF that llama.cpp serves, their checksums.

An adapter is a safetensors file written by `flowc.backbone` (format `flowc-lora/1`): tensors plus
string metadata holding the LoRA config, the base model's config and the sha256 of the base GGUF it
was trained on. Beside it lies the same adapter in llama.cpp's LoRA GGUF format, `<stem>.gguf`, which
the runtime serves over the unchanged base file. An adapter is addressed by the sha256 of its
safetensors file; the artifact and the lockfile pin that, the served file's sha256 and the base's.

Only the metadata is read here, without jax or the safetensors package (the runtime must not need
them): a safetensors file starts with the byte length of a JSON header (8 bytes, little-endian),
then that header, whose `__metadata__` entry is the metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flowc.errors import Diagnostic, FlowcError
from flowc.spec.models import Pipeline
from flowc.spec.paths import spec_path

FORMAT = "flowc-lora/1"
SUFFIX = ".safetensors"
SERVED_SUFFIX = ".gguf"
LOCAL_PREFIX = "local/"
_MAX_HEADER = 100_000_000  # the safetensors library's own limit on the header's size


def served_path(adapter: Path) -> Path:
    """The llama.cpp LoRA GGUF that serves `adapter` (`x.safetensors` → `x.gguf`, same folder)."""
    return adapter.with_suffix(SERVED_SUFFIX)


# -- checksums -----------------------------------------------------------------------------------

# (path, size, mtime_ns, inode) -> sha256: a file is hashed once per process until it changes.
_sha_cache: dict[tuple[str, int, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """The sha256 of a file, remembered while its size, mtime and inode stay the same."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)
    digest = _sha_cache.get(key)
    if digest is None:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        digest = _sha_cache[key] = h.hexdigest()
    return digest


def short(digest: str) -> str:
    """The prefix of a sha256 that messages show."""
    return digest[:12]


# -- the safetensors header ----------------------------------------------------------------------


def _split(blob: bytes, where: str) -> tuple[dict[str, Any], bytes]:
    if len(blob) < 8:
        raise FlowcError("adapter-invalid", f"{where} is not a safetensors file (too short)", hint=_REWRITE)
    (n,) = struct.unpack("<Q", blob[:8])
    if n > min(_MAX_HEADER, len(blob) - 8):
        raise FlowcError("adapter-invalid", f"{where} is not a safetensors file (bad header length)", hint=_REWRITE)
    try:
        header = json.loads(blob[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FlowcError("adapter-invalid", f"{where}: the safetensors header is not JSON ({e})", hint=_REWRITE) from e
    if not isinstance(header, dict):
        raise FlowcError("adapter-invalid", f"{where}: the safetensors header is not a JSON object", hint=_REWRITE)
    return header, blob[8 + n :]


_REWRITE = "save adapters with flowc.backbone (LoraTrainer.save or checkpoint.save_adapter)"


def read_metadata(path: Path) -> dict[str, str]:
    """The `__metadata__` of a flowc adapter file, checked to be one.

    Raises:
        FlowcError: adapter-invalid when the file is not a safetensors file of format flowc-lora/1.
    """
    try:
        with path.open("rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
            blob = head + (f.read(n) if 0 <= n <= _MAX_HEADER else b"")
    except OSError as e:
        raise FlowcError("adapter-invalid", f"cannot read {path}: {e}", hint="check the file") from e
    header, _ = _split(blob, str(path))
    meta = header.get("__metadata__") or {}
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("base_sha256"), str):
        raise FlowcError(
            "adapter-invalid",
            f"{path} is not a flowc LoRA adapter (format {meta.get('format') if isinstance(meta, dict) else None!r})",
            hint=_REWRITE,
        )
    return {str(k): str(v) for k, v in meta.items()}


def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header written with sorted keys.

    The safetensors library writes the metadata in hash-map order, which changes from process to
    process: the same tensors saved twice would get two checksums. Tensor offsets count from the
    end of the header, so the header may be rewritten freely; it is padded with spaces to a
    multiple of 8 bytes, as the format asks.
    """
    header, data = _split(blob, "<adapter bytes>")
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


# -- what a spec's adapters resolve to -----------------------------------------------------------


@dataclass(frozen=True)
class AdapterRef:
    """A model's adapter as compiled: its files and the checksums that pin them.

    Attributes:
        model: the model declaration's name.
        written: the `adapter:` value as the spec writes it (relative to the spec's folder, or absolute).
        path: the adapter file, absolute.
        sha256: the adapter file's sha256, its content address.
        served: the llama.cpp LoRA GGUF beside it, absolute.
        served_sha256: that file's sha256.
        base_sha256: the sha256 of the base GGUF the adapter was trained on (from its metadata).
        lora: the LoRA settings from its metadata (rank, alpha, targets).
    """

    model: str
    written: str
    path: Path
    sha256: str
    served: Path
    served_sha256: str
    base_sha256: str
    lora: dict[str, Any]

    def param_value(self) -> dict[str, str]:
        """The value of the `<model>.weights` param: the adapter named by path and content hash."""
        return {"path": self.written, "sha256": self.sha256}

    def record(self) -> dict[str, Any]:
        """What the artifact and the lockfile pin (plain JSON, no absolute paths)."""
        return {
            "adapter": self.written,
            "sha256": self.sha256,
            "served": Path(self.written).with_suffix(SERVED_SUFFIX).as_posix(),
            "served_sha256": self.served_sha256,
            "base_sha256": self.base_sha256,
            "lora": self.lora,
        }


def is_local(model_id: str) -> bool:
    return model_id.startswith(LOCAL_PREFIX)


def resolve_adapters(spec: Pipeline) -> tuple[dict[str, AdapterRef], list[Diagnostic]]:
    """Every model's adapter, hashed; and a located diagnostic for each that cannot be used.

    Checked here (what the spec alone decides): adapters and trainable weights only on `local/`
    models, the adapter file exists and is a flowc adapter, its served GGUF lies beside it.
    Whether the adapter fits the model's base file is checked where models are resolved
    (`flowc.runtime.adapters`), since finding a `local/` model's file is the runtime's business.
    """
    refs: dict[str, AdapterRef] = {}
    diags: list[Diagnostic] = []
    for name, md in spec.models.items():
        if not is_local(md.id) and (md.adapter is not None or md.trainable):
            what = "adapter" if md.adapter is not None else "trainable"
            diags.append(
                Diagnostic(
                    "adapter-unsupported",
                    f"model '{name}' ({md.id}) has {'an adapter' if md.adapter is not None else 'trainable weights'}, "
                    "but flowc serves and trains weights only for the embedded local/ models",
                    spec.span("models", name, what),
                    "use local/<profile> (e.g. local/smollm2) or local/gguf:<path to a .gguf>; "
                    "for a llama.cpp server behind api_base, start the server with --lora <adapter.gguf>",
                )
            )
            continue
        if md.adapter is None:
            continue
        if not spec_path(md.adapter, spec.base_dir).allowed:
            continue  # outside the project: check-files reports it, and the file is never read
        ref = _resolve_one(spec, name, md.adapter, diags)
        if ref is not None:
            refs[name] = ref
    return refs, diags


def _resolve_one(spec: Pipeline, name: str, written: str, diags: list[Diagnostic]) -> AdapterRef | None:
    span = spec.span("models", name, "adapter")
    try:
        path = (spec.base_dir / written).resolve()
        found = path.is_file()
    except (OSError, ValueError):  # a name the file system cannot hold (a NUL byte, too long)
        path, found = Path(os.devnull), False
    if not found:
        diags.append(
            Diagnostic(
                "adapter-not-found",
                f"model '{name}': no adapter file at '{written}' (looked for {path})",
                span,
                "adapter paths are relative to the spec's folder; 'flowc optimize --write' copies "
                "trained adapters to adapters/ beside the spec",
            )
        )
        return None
    if path.suffix != SUFFIX:
        diags.append(
            Diagnostic(
                "adapter-invalid",
                f"model '{name}': '{written}' is not a .safetensors adapter",
                span,
                "name the flowc adapter (x.safetensors); its llama.cpp GGUF (x.gguf) must lie beside it",
            )
        )
        return None
    try:
        meta = read_metadata(path)
    except FlowcError as e:
        diags.append(Diagnostic("adapter-invalid", f"model '{name}': {e.diagnostic.message}", span, e.hint))
        return None
    served = served_path(path)
    if not served.is_file():
        diags.append(
            Diagnostic(
                "adapter-not-found",
                f"model '{name}': the adapter has no served GGUF beside it (looked for {served})",
                span,
                f"export it: LoraTrainer.export('{served.name}', kind='adapter'), or "
                "flowc.optimizers.weights.AdapterStore.publish(...)",
            )
        )
        return None
    try:
        lora = json.loads(meta.get("lora", "{}"))
    except json.JSONDecodeError:
        lora = {}
    return AdapterRef(
        model=name,
        written=written,
        path=path,
        sha256=file_sha256(path),
        served=served,
        served_sha256=file_sha256(served),
        base_sha256=meta["base_sha256"],
        lora=lora if isinstance(lora, dict) else {},
    )
