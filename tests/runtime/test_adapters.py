"""Weights as params, without a model: adapters resolved and pinned at compile time, located
errors for unusable ones, the artifact and lockfile hashes, `with_params`, and the refusals.

Adapter files are written here byte by byte (the safetensors format is a JSON header and raw
tensors), so these tests need neither jax nor the safetensors package.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

import flowc
from flowc.cli.main import main
from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError, LMError, SpecErrors
from flowc.runtime.adapters import base_diagnostics, lora_for, preflight
from flowc.runtime.client import ModelClient
from flowc.runtime.lm import LMRequest, LoraAdapter, chat
from flowc.spec.adapters import canonical_safetensors, file_sha256, read_metadata

SPEC = """\
pipeline p {
  input question: str
  output answer: str <- qa.answer
  model m = "local/gguf:BASE" {
    adapter: "adapters/m.safetensors"
    trainable: true
  }
  node qa: llm {
    prompt: "{{question}}"
    question <- question
    output answer: str
  }
}
"""


def adapter_bytes(base_sha256: str, values: tuple[float, ...] = (1.0, 2.0), fmt: str = "flowc-lora/1") -> bytes:
    """A flowc adapter file: one F32 tensor and flowc's metadata."""
    meta = {"format": fmt, "base_sha256": base_sha256, "lora": json.dumps({"rank": 1, "alpha": 2.0, "targets": ["q"]})}
    header = {
        "__metadata__": meta,
        "wq.a": {"dtype": "F32", "shape": [len(values)], "data_offsets": [0, 4 * len(values)]},
    }
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + struct.pack(f"<{len(values)}f", *values)


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "base.gguf"
    path.write_bytes(b"a stand-in base model file")
    return path


def write_project(
    tmp_path: Path, base: Path, *, base_sha: str | None = None, values: tuple[float, ...] = (1.0,)
) -> Path:
    adapters = tmp_path / "adapters"
    adapters.mkdir(exist_ok=True)
    (adapters / "m.safetensors").write_bytes(adapter_bytes(base_sha or file_sha256(base), values))
    (adapters / "m.gguf").write_bytes(b"served " + bytes(str(values), "utf-8"))
    spec = tmp_path / "p.flow"
    spec.write_text(SPEC.replace("BASE", str(base)))
    return spec


def diagnostics(path: Path) -> list[tuple[str, int, int]]:
    with pytest.raises(SpecErrors) as e:
        flowc.compile(path)
    return [(d.code, d.span.line, d.span.column) for d in e.value.errors if d.span]


# -- compile: values, artifact, lockfile -------------------------------------------------------------


def test_weights_param_names_the_adapter_by_content_hash(tmp_path: Path, base: Path) -> None:
    c = flowc.compile(write_project(tmp_path, base))
    sha = file_sha256(tmp_path / "adapters" / "m.safetensors")
    assert c.params["m.weights"].value == {"path": "adapters/m.safetensors", "sha256": sha}
    rec = c.to_artifact()["weights"]["m"]
    assert rec == c.lockfile()["weights"]["m"]
    assert rec["sha256"] == sha and rec["served"] == "adapters/m.gguf"
    assert rec["served_sha256"] == file_sha256(tmp_path / "adapters" / "m.gguf")
    assert rec["base_sha256"] == file_sha256(base) and rec["lora"]["rank"] == 1
    assert c.lockfile()["params"]["m.weights"]["sha256"] != c.lockfile()["params"]["qa.prompt"]["sha256"]


def test_the_artifact_hash_follows_the_adapters_content(tmp_path: Path, base: Path) -> None:
    spec = write_project(tmp_path, base, values=(1.0,))
    first = flowc.compile(spec)
    write_project(tmp_path, base, values=(2.0,))  # same path, retrained
    second = flowc.compile(spec)
    assert first.spec_hash == second.spec_hash  # the spec text did not change...
    assert first.hash != second.hash  # ...the weights did


def test_a_pipeline_without_adapters_has_no_weights_section() -> None:
    c = flowc.compile(SPEC.replace('adapter: "adapters/m.safetensors"', "").replace("local/gguf:BASE", "local/smollm2"))
    assert "weights" not in c.to_artifact() and c.lockfile()["weights"] == {}
    assert c.params["m.weights"].value is None and c.adapters == {}


def test_requests_carry_the_adapter_and_key_on_its_hash(tmp_path: Path, base: Path) -> None:
    c = flowc.compile(write_project(tmp_path, base))
    adapter = lora_for(c, "m")
    assert adapter is not None and adapter.served == str(tmp_path / "adapters" / "m.gguf")
    plain = LMRequest(model="local/smollm2", messages=chat(None, "hi"))
    assert "adapter" not in plain.canonical()  # requests without weights keep their keys
    tuned = plain.model_copy(update={"adapter": adapter})
    assert tuned.canonical()["adapter"] == adapter.sha256 and tuned.key() != plain.key()


# -- located errors at check time --------------------------------------------------------------------


def test_a_missing_adapter_is_located(tmp_path: Path, base: Path) -> None:
    spec = write_project(tmp_path, base)
    (tmp_path / "adapters" / "m.safetensors").unlink()
    assert diagnostics(spec) == [("adapter-not-found", 5, 15)]


def test_an_adapter_without_its_served_gguf_is_located(tmp_path: Path, base: Path) -> None:
    spec = write_project(tmp_path, base)
    (tmp_path / "adapters" / "m.gguf").unlink()
    with pytest.raises(SpecErrors) as e:
        flowc.compile(spec)
    (d,) = e.value.errors
    assert (d.code, d.span.line if d.span else 0) == ("adapter-not-found", 5)
    assert "m.gguf" in d.message and "kind='adapter'" in (d.hint or "")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("m.gguf", b"GGUF"),
        ("m.safetensors", b"not a safetensors file"),
        ("m.safetensors", adapter_bytes("0" * 64, fmt="someone-else/1")),
    ],
    ids=["gguf", "garbage", "foreign"],
)
def test_a_file_that_is_not_a_flowc_adapter_is_located(tmp_path: Path, base: Path, name: str, content: bytes) -> None:
    spec = write_project(tmp_path, base)
    (tmp_path / "adapters" / name).write_bytes(content)
    spec.write_text(spec.read_text().replace("adapters/m.safetensors", f"adapters/{name}"))
    assert diagnostics(spec) == [("adapter-invalid", 5, 15)]


def test_weights_of_a_remote_model_are_located_errors_in_both_front_ends(tmp_path: Path) -> None:
    flow = tmp_path / "p.flow"
    flow.write_text(SPEC.replace("local/gguf:BASE", "openai/gpt-4o-mini"))
    assert diagnostics(flow) == [("adapter-unsupported", 5, 15)]
    flow.write_text(
        SPEC.replace("local/gguf:BASE", "openai/gpt-4o-mini").replace('adapter: "adapters/m.safetensors"', "")
    )
    assert diagnostics(flow) == [("adapter-unsupported", 6, 16)]
    yaml = tmp_path / "p.yaml"
    yaml.write_text(
        "pipeline: p\ninputs: {question: {type: str}}\noutputs: {answer: {source: qa.answer}}\n"
        "models:\n  m:\n    id: openai/gpt-4o-mini\n    adapter: adapters/m.safetensors\n"
        "nodes:\n  qa: {kind: llm, prompt: '{{question}}', inputs: {question: question}, outputs: {answer: str}}\n"
    )
    assert diagnostics(yaml) == [("adapter-unsupported", 7, 14)]


# -- with_params ---------------------------------------------------------------------------------------


def test_with_params_sets_checks_and_removes_adapters(tmp_path: Path, base: Path) -> None:
    c = flowc.compile(write_project(tmp_path, base))
    other = tmp_path / "run" / "m-new.safetensors"
    other.parent.mkdir()
    other.write_bytes(canonical_safetensors(adapter_bytes(file_sha256(base), (5.0,))))
    other.with_suffix(".gguf").write_bytes(b"served new")
    value = {"path": str(other), "sha256": file_sha256(other)}
    patched = c.with_params({"m.weights": value})
    assert patched.params["m.weights"].value == value and patched.adapters["m"].path == other
    assert patched.hash != c.hash
    assert c.with_params({"m.weights": None}).adapters == {}
    with pytest.raises(FlowcError) as e:
        c.with_params({"m.weights": {"path": str(other), "sha256": "0" * 64}})
    assert e.value.code == "adapter-checksum-mismatch"
    for bad in ("adapters/m.safetensors", {"path": str(other)}, {"path": str(other), "sha256": "abc"}):
        with pytest.raises(FlowcError) as e:
            c.with_params({"m.weights": bad})
        assert e.value.code == "invalid-value"


# -- refusals: another base, changed files ---------------------------------------------------------------


def test_an_adapter_of_another_base_is_refused_on_its_line(
    tmp_path: Path, base: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    spec = write_project(tmp_path, base, base_sha="ab" * 32)
    c = flowc.compile(spec)  # the spec alone cannot tell: which file `local/...` is, is the runtime's business
    (d,) = base_diagnostics(c)
    assert d.code == "adapter-base-mismatch" and d.span is not None and (d.span.line, d.span.column) == (5, 15)
    assert "abababababab…" in (d.hint or "") and file_sha256(base)[:12] in (d.hint or "")
    with pytest.raises(SpecErrors):
        preflight(c)
    assert main(["check", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "p.flow:5:15: error[adapter-base-mismatch]" in err and '5 |     adapter: "adapters/m.safetensors"' in err
    assert main(["run", str(spec), "--input", "question=hi", "--no-cache"]) == 1  # refused before any call
    assert "adapter-base-mismatch" in capsys.readouterr().err


def test_a_compiled_artifact_refuses_changed_adapter_files(tmp_path: Path, base: Path) -> None:
    spec = write_project(tmp_path, base)
    art, lock = flowc.compile(spec).write(tmp_path / "build")
    assert CompiledPipeline.from_artifact(art).hash == json.loads(art.read_text())["hash"]
    assert json.loads(lock.read_text())["weights"]["m"]["sha256"] == file_sha256(
        tmp_path / "adapters" / "m.safetensors"
    )
    for name in ("m.gguf", "m.safetensors"):
        path = tmp_path / "adapters" / name
        kept = path.read_bytes()
        path.write_bytes(kept[:-1] + b"\x00" if name.endswith("safetensors") else kept + b"!")
        with pytest.raises(FlowcError) as e:
            CompiledPipeline.from_artifact(art)
        assert e.value.code == "adapter-checksum-mismatch", name
        path.write_bytes(kept)
    assert CompiledPipeline.from_artifact(art).hash == json.loads(art.read_text())["hash"]


async def test_an_adapter_cannot_reach_a_remote_model() -> None:
    adapter = LoraAdapter(served="/x.gguf", sha256="1" * 64, served_sha256="2" * 64, base_sha256="3" * 64)
    req = LMRequest(model="openai/gpt-4o-mini", messages=chat(None, "hi"), adapter=adapter, node="qa")
    with pytest.raises(LMError) as e:
        await ModelClient().complete(req)
    assert e.value.code == "adapter-unsupported"


def test_adapter_files_are_byte_reproducible(tmp_path: Path) -> None:
    """The safetensors library writes metadata in hash-map order; flowc rewrites the header sorted."""
    blob = adapter_bytes("0" * 64)
    n = struct.unpack("<Q", blob[:8])[0]
    header = json.loads(blob[8 : 8 + n])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    text = json.dumps(header).encode()
    reordered = struct.pack("<Q", len(text)) + text + blob[8 + n :]
    assert reordered != blob
    assert canonical_safetensors(reordered) == canonical_safetensors(blob)
    assert (len(canonical_safetensors(blob)) - len(blob[8 + n :])) % 8 == 0
    (tmp_path / "x.safetensors").write_bytes(canonical_safetensors(blob))
    assert read_metadata(tmp_path / "x.safetensors")["base_sha256"] == "0" * 64


def test_the_weights_interface_imports_no_jax() -> None:
    """JADE and POQD import jax themselves; the interface they build on, the runtime that serves
    adapters and the conformance suite must not."""
    import subprocess
    import sys

    code = (
        "import sys, flowc.optimizers.weights, flowc.optimizers.writeback, flowc.runtime.adapters, "
        "flowc.testing.contracts; assert 'jax' not in sys.modules, 'jax was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
