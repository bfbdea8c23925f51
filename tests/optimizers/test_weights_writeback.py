"""Writing trained weights back into a spec: the adapter copied beside it under its content hash,
`adapter: "..."` edited into `.flow` and YAML sources with comments kept, and `flowc optimize
--write` doing both with an optimizer that trains a real adapter."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("jax")
pytest.importorskip("safetensors")

import flowc
from flowc.backbone.checkpoint import save_adapter
from flowc.backbone.config import ModelConfig
from flowc.backbone.lora import LoraConfig
from flowc.compile import CompiledPipeline, load_spec
from flowc.errors import FlowcError
from flowc.optimizers.base import ParamPatch
from flowc.optimizers.writeback import copy_adapters, optimized_source
from flowc.spec.adapters import file_sha256, short

CFG = ModelConfig(
    arch="llama", vocab_size=61, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, hidden_dim=12, head_dim=4,
    rope_theta=10000.0, rms_eps=1e-5, context_length=32,
)  # fmt: skip

FLOW = """\
# weights write-back (this comment stays)
pipeline qa {
  input question: str
  output answer: str <- answer.answer
  model m = "local/gguf:BASE" {  # the trained model
    max_tokens: 16   # short answers
    trainable: true
  }
  node answer: llm {
    prompt: "Q: {{question}}"
    question <- question
    output answer: str
  }
}
"""

YAML = """\
# weights write-back (this comment stays)
pipeline: qa
inputs:
  question: {type: str}
outputs:
  answer: {source: answer.answer}
models:
  m:
    id: local/gguf:BASE   # the trained model
    trainable: true
nodes:
  answer:
    kind: llm
    prompt: "Q: {{question}}"
    inputs: {question: question}
    outputs: {answer: str}
"""


def make_adapter(path: Path, seed: int = 0, base_sha256: str = "0" * 64) -> dict[str, str]:
    """A flowc adapter file with a stand-in served GGUF beside it; returns its weights value."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(1, 8, 2)).astype(np.float32), rng.normal(size=(1, 2, 8)).astype(np.float32)
    lora = {"wq": {"a": a, "b": b}}
    save_adapter(path, lora, LoraConfig(rank=2, alpha=4.0, targets=("q",)), base_sha256=base_sha256, model_config=CFG)
    path.with_suffix(".gguf").write_bytes(b"GGUF stand-in " + path.read_bytes()[:64])
    return {"path": str(path), "sha256": file_sha256(path)}


def project(tmp_path: Path, text: str, name: str) -> CompiledPipeline:
    base = tmp_path / "base.gguf"
    base.write_bytes(b"not a model: compile does not read the base file")
    spec = tmp_path / name
    spec.write_text(text.replace("BASE", str(base)), encoding="utf-8")
    return flowc.compile(spec)


def write_back(original: CompiledPipeline, value: dict[str, str], extra: dict[str, Any] | None = None) -> str:
    patch = ParamPatch(
        pipeline="qa", base_hash=original.hash, optimizer="test", seed=0, params={"m.weights": value, **(extra or {})}
    )
    patched = patch.apply(original)
    source = Path(str(original.spec.source_path))
    return optimized_source(original, patched, copy_adapters(patch, original, source.parent))


def test_flow_gets_an_adapter_line_in_the_model_block(tmp_path: Path) -> None:
    original = project(tmp_path, FLOW, "qa.flow")
    value = make_adapter(tmp_path / "run" / "adapters" / "m-x.safetensors")
    new = write_back(original, value)
    rel = f"adapters/m-{short(value['sha256'])}.safetensors"
    old_lines = (tmp_path / "qa.flow").read_text().splitlines()
    assert new.splitlines() == [*old_lines[:7], f'    adapter: "{rel}"', *old_lines[7:]]
    # the written spec names files that live beside it, and reads back with that adapter
    assert (tmp_path / rel).is_file() and (tmp_path / rel).with_suffix(".gguf").is_file()
    (tmp_path / "qa.flow").write_text(new)
    again = flowc.compile(tmp_path / "qa.flow")
    assert again.adapters["m"].sha256 == value["sha256"]
    assert again.params["m.weights"].value == {"path": rel, "sha256": value["sha256"]}


def test_flow_adapter_is_replaced(tmp_path: Path) -> None:
    original = project(tmp_path, FLOW, "qa.flow")
    first = make_adapter(tmp_path / "run" / "a.safetensors", seed=1)
    (tmp_path / "qa.flow").write_text(write_back(original, first))
    second = make_adapter(tmp_path / "run" / "b.safetensors", seed=2)
    new = write_back(flowc.compile(tmp_path / "qa.flow"), second)
    assert f'    adapter: "adapters/m-{short(second["sha256"])}.safetensors"' in new.splitlines()
    assert short(first["sha256"]) not in new and new.count("adapter:") == 1 and "# short answers" in new


def test_flow_prompt_and_weights_edited_together(tmp_path: Path) -> None:
    original = project(tmp_path, FLOW, "qa.flow")
    value = make_adapter(tmp_path / "run" / "m.safetensors")
    new = write_back(original, value, {"answer.prompt": "Answer briefly. Q: {{question}}"})
    assert 'prompt: "Answer briefly. Q: {{question}}"' in new
    assert f'adapter: "adapters/m-{short(value["sha256"])}.safetensors"' in new
    assert "# weights write-back (this comment stays)" in new and "# the trained model" in new


def test_yaml_gets_an_adapter_key_after_the_id(tmp_path: Path) -> None:
    original = project(tmp_path, YAML, "qa.yaml")
    value = make_adapter(tmp_path / "run" / "m.safetensors")
    new = write_back(original, value)
    rel = f"adapters/m-{short(value['sha256'])}.safetensors"
    old_lines = (tmp_path / "qa.yaml").read_text().splitlines()
    assert new.splitlines() == [*old_lines[:9], f'    adapter: "{rel}"', *old_lines[9:]]
    (tmp_path / "qa.yaml").write_text(new)
    second = make_adapter(tmp_path / "run" / "n.safetensors", seed=5)
    newer = write_back(flowc.compile(tmp_path / "qa.yaml"), second)
    assert f'    adapter: "adapters/m-{short(second["sha256"])}.safetensors"' in newer.splitlines()
    assert newer.count("adapter:") == 1 and "# the trained model" in newer
    rel = f"adapters/m-{short(second['sha256'])}.safetensors"
    assert load_spec_text(newer, tmp_path / "check.yaml").models["m"].adapter == rel


def load_spec_text(text: str, path: Path) -> Any:
    path.write_text(text)
    return load_spec(path)


def test_yaml_with_a_prompt_change_is_printed_canonically_with_the_copied_adapter(tmp_path: Path) -> None:
    original = project(tmp_path, YAML, "qa.yaml")
    value = make_adapter(tmp_path / "run" / "m.safetensors")
    new = write_back(original, value, {"answer.prompt": "Answer briefly. Q: {{question}}"})
    spec = load_spec_text(new, tmp_path / "printed.yaml")
    assert spec.models["m"].adapter == f"adapters/m-{short(value['sha256'])}.safetensors"
    assert spec.nodes["answer"].prompt == "Answer briefly. Q: {{question}}"


def test_copy_refuses_an_adapter_that_changed(tmp_path: Path) -> None:
    original = project(tmp_path, FLOW, "qa.flow")
    value = make_adapter(tmp_path / "run" / "m.safetensors")
    patch = ParamPatch(pipeline="qa", base_hash=original.hash, optimizer="t", seed=0, params={"m.weights": value})
    make_adapter(tmp_path / "run" / "m.safetensors", seed=9)  # retrained in place after the patch was made
    with pytest.raises(FlowcError) as e:
        copy_adapters(patch, original, tmp_path)
    assert e.value.code == "adapter-checksum-mismatch" and short(value["sha256"]) in str(e.value)


# -- flowc optimize --write with an optimizer that trains a real adapter -------------------------------


@pytest.mark.parametrize("kind", ["flow", "yaml"])
def test_optimize_write_copies_the_adapter_and_edits_the_spec(
    kind: str, tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from _tiny_weights import TinyLoraSFT

    from flowc.cli.main import main
    from flowc.testing.contracts import trained_pipeline_answer
    from flowc.testing.optimizer_fakes import QA_TRAIN, QA_VAL, FunctionLM

    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    monkeypatch.setattr("flowc.optimizers.registry.available", lambda: {"tiny-lora-sft": TinyLoraSFT})
    monkeypatch.setattr("flowc.runtime.session.default_client", lambda *a, **k: FunctionLM(trained_pipeline_answer))
    spec = tmp_path / f"qa.{kind}"
    text = (FLOW if kind == "flow" else YAML).replace("BASE", str(tiny_gguf)).replace("max_tokens: 16", "max_tokens: 4")
    text = text.replace('"Q: {{question}}"', '"Notes: Q: {{question}}"')  # the fake answers "Paris" with an adapter
    spec.write_text(text)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_TRAIN))
    (tmp_path / "val.jsonl").write_text("".join(json.dumps(x) + "\n" for x in QA_VAL))
    run_dir = tmp_path / "run"
    args = ["optimize", str(spec), "-O", "tiny-lora-sft", "--data", str(tmp_path / "train.jsonl"), "-m", "exact_match"]
    assert main([*args, "--val", str(tmp_path / "val.jsonl"), "--run-dir", str(run_dir), "--write"]) == 0
    patch = ParamPatch.load(run_dir / "patch.json")
    sha = patch.params["m.weights"]["sha256"]
    assert Path(patch.params["m.weights"]["path"]).parent == run_dir / "adapters"
    rel = f"adapters/m-{short(sha)}.safetensors"
    assert file_sha256(tmp_path / rel) == sha and (tmp_path / rel).with_suffix(".gguf").is_file()
    new = spec.read_text()
    assert f'adapter: "{rel}"' in new and "# the trained model" in new
    assert "validation exact_match: 0.000 → 1.000" in capsys.readouterr().out
    written = flowc.compile(spec)
    assert written.adapters["m"].sha256 == sha
    served = Path(patch.params["m.weights"]["path"]).with_suffix(".gguf")
    assert written.weights_record()["m"]["served_sha256"] == file_sha256(served)
    assert main(["check", str(spec)]) == 0  # the base checksum matches too
