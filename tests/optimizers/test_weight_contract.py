"""The weight-param conformance suite (`WeightOptimizerContract`) on a tiny optimizer that trains a
real LoRA adapter with the jax backbone, and the adapter it trains served by llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("jax")

from _tiny_weights import TinyLoraSFT

from flowc.optimizers.base import Optimizer
from flowc.runtime.lm import LMClient
from flowc.testing.contracts import WeightOptimizerContract


class TestTinyLoraSFTContract(WeightOptimizerContract):
    @pytest.fixture
    def base_model(self, tiny_gguf: Path) -> str:
        return f"local/gguf:{tiny_gguf}"

    def make_optimizer(self, pipeline_lm: LMClient, optimizer_lm: LMClient, resume: bool = False) -> Optimizer:
        return TinyLoraSFT(pipeline_lm=pipeline_lm, resume=resume)


@pytest.mark.integration
def test_the_trained_adapter_is_served_by_llama_cpp(tiny_gguf: Path, tmp_path: Path) -> None:
    """The patch's adapter, loaded by the runtime over the tiny base: it changes llama.cpp's
    next-token distribution, and both nodes of the pipeline share one loaded instance."""
    pytest.importorskip("xllamacpp")
    import flowc
    from flowc.optimizers.budget import Budget
    from flowc.optimizers.scoring import metric_from_spec
    from flowc.runtime import local_provider
    from flowc.runtime.adapters import lora_for
    from flowc.runtime.session import open_executor
    from flowc.testing.contracts import trained_pipeline_answer
    from flowc.testing.optimizer_fakes import QA_SPEC, QA_TRAIN, QA_VAL, FunctionLM

    model = f"local/gguf:{tiny_gguf}"
    spec = QA_SPEC.replace(
        'model m = "fake/model"', f'model m = "{model}" {{\n    trainable: true\n    max_tokens: 4\n  }}'
    )
    compiled = flowc.compile(spec)
    opt = TinyLoraSFT(pipeline_lm=FunctionLM(trained_pipeline_answer), steps=4)
    patch = opt.optimize(
        compiled,
        trainset=list(QA_TRAIN),
        valset=list(QA_VAL),
        metric=metric_from_spec(compiled),
        budget=Budget(calls=100),
        seed=0,
        run_dir=tmp_path / "run",
    )
    patched = patch.apply(compiled)
    adapter = lora_for(patched, "m")
    assert adapter is not None

    def top(loaded: local_provider.LoadedModel) -> dict[int, float]:
        r = loaded.server.handle_completions({"prompt": "Q: Where is the Louvre?", "n_predict": 1, "n_probs": 8})
        return {e["id"]: e["logprob"] for e in r["choices"][0]["logprobs"]["content"][0]["top_logprobs"]}

    plain, tuned = top(local_provider.load(model)), top(local_provider.load(model, adapter=adapter))
    shared = set(plain) & set(tuned)
    assert shared and max(abs(plain[t] - tuned[t]) for t in shared) > 1e-3, "the adapter changed nothing"

    result = open_executor(patched, cache=False, store=False).run_sync({"question": "Where is the Louvre?"})
    assert [c.node for c in result.lm_calls] == ["draft", "answer"], result.error
    assert local_provider.loaded(model, adapter) is local_provider.load(model, adapter=adapter)
    assert sum(1 for (path, sha) in local_provider._models if sha == adapter.sha256) == 1
