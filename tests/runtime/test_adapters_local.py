"""LoRA adapters on the embedded model for real: SmolLM2 served by llama.cpp with an adapter made
by `flowc.backbone`, the refusals, and `flowc compile` → `flowc run X.artifact.json`.

The adapter is random (a LoRA with a non-zero update, large enough to change greedy replies), not
trained: training SmolLM2 takes minutes on a CPU, and what is tested here is that the runtime
serves exactly the adapter it was given. The tiny trained adapter of the weight-param conformance
suite (tests/optimizers/test_weight_contract.py) is served by llama.cpp too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

jax = pytest.importorskip("jax")
xllamacpp = pytest.importorskip("xllamacpp")

import numpy as np  # noqa: E402

import flowc  # noqa: E402
from flowc.backbone.checkpoint import save_adapter  # noqa: E402
from flowc.backbone.export import export_lora_adapter  # noqa: E402
from flowc.backbone.gguf_io import GGUFModelFile  # noqa: E402
from flowc.backbone.lora import LoraConfig, init_lora  # noqa: E402
from flowc.cli.main import main  # noqa: E402
from flowc.errors import FlowcError  # noqa: E402
from flowc.runtime import local_provider  # noqa: E402
from flowc.runtime.adapters import lora_for  # noqa: E402
from flowc.runtime.local_profiles import gguf_path  # noqa: E402
from flowc.runtime.session import open_executor  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

LORA = LoraConfig(rank=4, alpha=8.0, targets=("q", "v"))
PROMPT = "Write one sentence about the sea."

SPEC = """\
pipeline p {
  input topic: str
  output text: str <- second.text
  model tuned = "local/smollm2" {
    max_tokens: 12
    adapter: "adapters/tuned.safetensors"
  }
  node first: llm {
    prompt: "{{topic}}"
    topic <- topic
    output text: str
  }
  node second: llm {
    prompt: "Say it again: {{text}}"
    text <- first.text
    output text: str
  }
}
"""


def make_adapter(folder: Path, base: Any, *, base_sha256: str | None = None, seed: int = 0) -> Path:
    """A random adapter for `base` (a GGUFModelFile), saved with its served GGUF beside it."""
    rng = np.random.default_rng(seed)
    lora = init_lora(jax.random.PRNGKey(seed), LORA, base.config)
    lora = jax.tree.map(lambda x: np.asarray(x) + rng.normal(0.0, 0.05, x.shape).astype(np.float32), lora)
    path = folder / "adapters" / "tuned.safetensors"
    save_adapter(path, lora, LORA, base_sha256=base_sha256 or base.sha256, model_config=base.config)
    export_lora_adapter(base, lora, LORA, path.with_suffix(".gguf"))
    return path


@pytest.fixture(scope="module")
def smollm() -> Any:
    return GGUFModelFile(gguf_path("smollm2"))


def greedy(server: Any, prompt: str = PROMPT) -> str:
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": 12, "temperature": 0.0}
    return str(server.handle_chat_completions(body)["choices"][0]["message"]["content"])


def test_the_runtime_serves_exactly_the_adapter(smollm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_adapter(tmp_path, smollm)
    (tmp_path / "p.flow").write_text(SPEC)
    compiled = flowc.compile(tmp_path / "p.flow")
    adapter = lora_for(compiled, "tuned")
    assert adapter is not None
    served = local_provider.load("local/smollm2", adapter=adapter)
    plain = local_provider.load("local/smollm2")
    assert served is not plain and served.path == plain.path
    # llama.cpp itself, given the same adapter file, answers the same; the base answers otherwise.
    params = xllamacpp.CommonParams()
    params.model.path = str(smollm.path)
    params.n_ctx = 512
    params.lora_adapters = [xllamacpp.CommonAdapterLoraInfo(adapter.served, 1.0)]
    reference = xllamacpp.Server(params)
    assert greedy(served.server) == greedy(reference) != greedy(plain.server)
    del reference

    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    result = open_executor(compiled, cache=False, store=False).run_sync({"topic": PROMPT})
    assert result.status == "ok", result.error
    assert [c.node for c in result.lm_calls] == ["first", "second"]
    # both nodes name the same model: one loaded instance per (base file, adapter)
    assert [k for k in local_provider._models if k[1] == adapter.sha256] == [(plain.path, adapter.sha256)]


def test_an_adapter_of_another_base_is_refused(smollm: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_adapter(tmp_path, smollm, base_sha256="ab" * 32, seed=3)
    (tmp_path / "p.flow").write_text(SPEC)
    assert main(["run", str(tmp_path / "p.flow"), "--input", f"topic={PROMPT}", "--no-cache"]) == 1
    err = capsys.readouterr().err
    assert "p.flow:6:15: error[adapter-base-mismatch]" in err and "abababababab…" in err and smollm.sha256[:12] in err
    # the provider refuses on its own too, before llama.cpp loads anything
    adapter = lora_for(flowc.compile(tmp_path / "p.flow"), "tuned")
    assert adapter is not None
    with pytest.raises(FlowcError) as e:
        local_provider.load("local/smollm2", adapter=adapter)
    assert e.value.code == "adapter-base-mismatch"
    assert local_provider.loaded("local/smollm2", adapter) is None


def test_compile_then_run_the_artifact_with_its_adapter(
    smollm: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    adapter = make_adapter(tmp_path, smollm, seed=5)
    spec = tmp_path / "p.flow"
    spec.write_text(SPEC)
    assert main(["compile", str(spec), "-o", str(tmp_path / "build")]) == 0
    art = tmp_path / "build" / "p.artifact.json"
    capsys.readouterr()
    assert main(["run", str(spec), "--input", f"topic={PROMPT}", "--no-cache"]) == 0
    from_spec = capsys.readouterr().out.split("\npath:")[0]
    assert main(["run", str(art), "--input", f"topic={PROMPT}", "--no-cache"]) == 0
    assert capsys.readouterr().out.split("\npath:")[0] == from_spec
    # the served file is replaced after compiling: the artifact refuses to run
    served = adapter.with_suffix(".gguf")
    served.write_bytes(served.read_bytes() + b"\0")
    assert main(["run", str(art), "--input", f"topic={PROMPT}", "--no-cache"]) == 1
    assert "error[adapter-checksum-mismatch]" in capsys.readouterr().err
