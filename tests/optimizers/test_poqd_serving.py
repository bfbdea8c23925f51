"""POQD end to end with the real parts that serve weights: `flowc optimize -O poqd --write` trains
the reader (the jax generator on the tiny random GGUF), the validation gate scores the reader
served by llama.cpp with the published adapter, `--write` copies the adapter beside the spec and
names it on the reader's model, and `flowc run` serves that copy. Only the decomposer and the
optimizer LLM are scripted (_poqd_fixtures.py), and the retriever's encoder is hashed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _poqd_fixtures import TRAIN, VAL, optimizer_answer, pipeline_answer, write_project

import flowc
from flowc.runtime.lm import LMRequest, LMResponse
from flowc.testing.optimizer_fakes import FunctionLM
from flowc.testing.retrieval_fakes import HashEncoder


@pytest.mark.integration
def test_optimize_write_then_run_serves_the_trained_reader(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("xllamacpp")
    from flowc.cli.main import main
    from flowc.optimizers.base import ParamPatch
    from flowc.runtime import local_provider
    from flowc.runtime.client import ModelClient
    from flowc.runtime.session import policies
    from flowc.spec.adapters import served_path, short

    requests: list[LMRequest] = []

    class Routed:
        """The pipeline's client: the scripted decomposer, and llama.cpp for the local reader."""

        def __init__(self, compiled: Any, **_: Any) -> None:
            self.local = ModelClient(policies(compiled))
            self.fake = FunctionLM(pipeline_answer)

        async def complete(self, request: LMRequest) -> LMResponse:
            requests.append(request)
            client = self.local if request.model.startswith("local/") else self.fake
            return await client.complete(request)

    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("flowc.runtime.session.default_client", Routed)
    monkeypatch.setattr("flowc.runtime.client.ModelClient", lambda *a, **k: FunctionLM(optimizer_answer))
    monkeypatch.setattr("flowc.runtime.retrieval.encoder.MiniLMEncoder", HashEncoder)
    spec = write_project(tmp_path / "project", tiny_gguf)
    spec.write_text(spec.read_text().replace("trainable: true", "trainable: true\n    max_tokens: 4"))
    for name, data in (("train", TRAIN), ("val", VAL)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in data))
    args = ["optimize", str(spec), "-O", "poqd", "--data", str(tmp_path / "train.jsonl")]
    args += ["--val", str(tmp_path / "val.jsonl"), "--run-dir", str(tmp_path / "run"), "--write"]
    for setting in ("tau=1", "kappa=1", "max_rounds=1", "final_steps=1", "batch_size=2", "rank=2"):
        args += ["--set", setting]
    assert main([*args, "--set", "learning_rate=0.05", "--set", "max_sequence=256"]) == 0

    patch = ParamPatch.load(tmp_path / "run" / "patch.json")
    value = patch.params["reader.weights"]
    assert Path(value["path"]).parent == tmp_path / "run" / "adapters"
    gated = [r for r in requests if r.node == "read" and r.adapter is not None]
    assert gated and {r.adapter.sha256 for r in gated if r.adapter} == {value["sha256"]}, "the gate served it"
    rel = f"adapters/reader-{short(value['sha256'])}.safetensors"
    assert f'adapter: "{rel}"' in spec.read_text()
    assert flowc.compile(spec).adapters["reader"].sha256 == value["sha256"]

    requests.clear()
    assert main(["run", str(spec), "-i", "question=What is the capital of France?", "--no-cache"]) == 0
    [read] = [r for r in requests if r.node == "read"]
    assert read.adapter is not None and read.adapter.sha256 == value["sha256"]
    assert Path(read.adapter.served) == served_path(spec.parent / rel).resolve()  # the copy beside the spec
    assert any(sha == value["sha256"] for (_, sha) in local_provider._models), "llama.cpp loaded the adapter"
