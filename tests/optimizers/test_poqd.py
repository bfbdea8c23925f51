"""POQD's parts (ALGORITHMS.md §3): the filter on the decomposer's sub-queries, the downstream loss
against a brute-force computation, the acceptance rule, the alternation's stopping rule, the
validation gate, the meta-prompt, the checks on the pipeline, and resume equivalence with the jax
generator on a tiny random-init model (killed in the middle of training).

The scripted parts are in _poqd_fixtures.py: a decomposer that names the country once the
optimizer's instruction asks for it, an optimizer LLM, and `OracleGenerator`, whose
log P(a | Q, D) is 0 when the passage holds the answer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _poqd_fixtures import (
    TRAIN,
    VAL,
    OracleGenerator,
    optimizer_answer,
    pipeline_answer,
    tiny_reader,
    write_project,
)

import flowc
from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.budget import Budget
from flowc.optimizers.poqd import POQD
from flowc.optimizers.poqd.downstream import Downstream
from flowc.optimizers.poqd.loss import log_prior, question_loss, sufficient_decrease
from flowc.optimizers.poqd.metaprompt import EMPTY, meta_prompt, read_instruction
from flowc.optimizers.poqd.roles import find_roles
from flowc.optimizers.scoring import metric_from_spec
from flowc.runtime.lm import LMRequest
from flowc.runtime.resources import RetrieverPool
from flowc.testing.optimizer_fakes import FunctionLM, SimulatedKill, request_text
from flowc.testing.retrieval_fakes import HashEncoder


@pytest.fixture
def project(tmp_path: Path, tiny_gguf: Path) -> Path:
    return write_project(tmp_path / "project", tiny_gguf)  # the oracle's adapters are adapters of it


def poqd(
    tmp_path: Path,
    generator: Any = None,
    *,
    answer: Callable[[LMRequest], str] = pipeline_answer,
    optimizer: Callable[[LMRequest], str] = optimizer_answer,
    **settings: Any,
) -> POQD:
    opt = POQD(
        pipeline_lm=FunctionLM(answer),
        optimizer_lm=FunctionLM(optimizer),
        optimizer_model="fake/optimizer",
        **{"tau": 2, "kappa": 2, "max_rounds": 2, "final_steps": 2, "batch_size": 2, **settings},
    )
    opt.retrievers = RetrieverPool(tmp_path / "embeddings", encoder=HashEncoder())
    opt.generator_factory = (generator or OracleGenerator()).factory
    return opt


def run(opt: POQD, compiled: CompiledPipeline, run_dir: Path, **kw: Any) -> Any:
    return opt.optimize(
        compiled,
        trainset=[dict(x) for x in TRAIN],
        valset=[dict(x) for x in VAL],
        metric=metric_from_spec(compiled),
        budget=kw.pop("budget", Budget()),
        seed=0,
        run_dir=run_dir,
    )


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


# -- the loss ---------------------------------------------------------------------------------------


def test_question_loss_is_the_marginal_likelihood_over_the_retrieved_passages() -> None:
    logp, scores = [-1.0, -3.0, -0.5], [0.8, 0.3, 0.1]
    prior = [math.exp(s) / sum(math.exp(t) for t in scores) for s in scores]
    brute = -math.log(sum(math.exp(lp) * p for lp, p in zip(logp, prior, strict=True)))
    assert question_loss(logp, scores) == pytest.approx(brute, rel=1e-12)
    # a temperature sharpens P(D | Q); very low temperature keeps the best passage alone
    assert question_loss(logp, scores, temperature=1e-4) == pytest.approx(1.0, rel=1e-6)
    assert np.exp(log_prior(scores)).sum() == pytest.approx(1.0)


def test_acceptance_needs_a_decrease_of_alpha() -> None:
    assert sufficient_decrease(1.0, 0.98, 0.02)  # exactly alpha, despite rounding
    assert sufficient_decrease(0.3, 0.28, 0.02)
    assert not sufficient_decrease(1.0, 0.99, 0.02)
    assert not sufficient_decrease(1.0, 1.5, 0.02)  # the notes' printed test would pass this one
    assert sufficient_decrease(1.0, 1.0, 0.0)


async def test_downstream_filters_retrieves_and_scores_like_a_brute_force(project: Path, tmp_path: Path) -> None:
    compiled = flowc.compile(project)
    roles = find_roles(compiled, output="answer")
    pool = RetrieverPool(tmp_path / "emb", encoder=HashEncoder())
    down = await Downstream.build(compiled, roles, [dict(x) for x in TRAIN], "answer", pool)
    down.generator = OracleGenerator()
    # the spec's prompt: "capital metropolis" -> the filter keeps "capital" (metropolis is not in the question)
    lm = FunctionLM(pipeline_answer)
    subq, unreadable = await down.subqueries(compiled, lm)
    assert subq == [["capital"]] * 4 and unreadable == 0
    spec_prompt = compiled.params["decompose.prompt"].value
    better = compiled.with_params({"decompose.prompt": "Name the country.\n\n" + spec_prompt})
    good, _ = await down.subqueries(better, lm)
    assert good[0] == ["capital", "France"]
    for queries in (subq, good):
        got = down.retrieve(queries)
        corpus = down.retriever.corpus
        brute = []
        for i, r in enumerate(got):
            assert len(r.docs) == 2 and list(r.scores) == sorted(r.scores, reverse=True)
            sims = down.retriever.similarities(queries[i])
            assert sorted(r.scores, reverse=True) == pytest.approx(sorted(sims, reverse=True)[:2], abs=1e-6)
            answer = TRAIN[i]["answer"]
            logps = [0.0 if answer in corpus[d].text else -5.0 for d in r.docs]
            prior = np.exp(np.asarray(r.scores) - max(r.scores))
            prior /= prior.sum()
            brute.append(-math.log(sum(math.exp(lp) * p for lp, p in zip(logps, prior, strict=True))))
        assert down.loss(got) == pytest.approx(sum(brute) / len(brute), rel=1e-9)
    assert down.loss(down.retrieve(good)) < down.loss(down.retrieve(subq))


async def test_a_reply_that_cannot_be_read_leaves_the_question_alone(project: Path, tmp_path: Path) -> None:
    compiled = flowc.compile(project)
    compiled = compiled.with_params(
        {"decompose.prompt": compiled.params["decompose.prompt"].value.replace("sub-queries", "parts")}
    )
    pool = RetrieverPool(tmp_path / "emb", encoder=HashEncoder())
    down = await Downstream.build(compiled, find_roles(compiled, output="answer"), TRAIN[:1], "answer", pool)
    # every word hallucinated: nothing survives the filter, so the question is searched alone
    subq, unreadable = await down.subqueries(compiled, FunctionLM(lambda r: "<subqueries>Lyon\nRome</subqueries>"))
    assert subq == [[TRAIN[0]["question"]]] and unreadable == 0


# -- the alternation ---------------------------------------------------------------------------------


def test_a_prompt_that_lowers_the_loss_by_alpha_is_kept_and_the_alternation_stops(
    project: Path, tmp_path: Path
) -> None:
    compiled = flowc.compile(project)
    gen = OracleGenerator()
    patch = run(poqd(tmp_path, gen), compiled, tmp_path / "run")
    cands = rows(tmp_path / "run" / "candidates.jsonl")
    first = next(c for c in cands if c["id"] == "r1-p1")
    assert first["accepted"] and first["scores"]["decrease"] >= 0.02
    assert patch.params["decompose.prompt"].startswith("Name the country of the question")
    assert patch.params["decompose.prompt"].endswith(compiled.params["decompose.prompt"].value)
    # round 2 proposed nothing new (the fake repeats itself): the prompt stopped changing, so the
    # alternation ended and the generator trained to the final_steps bound (2 rounds of tau=2, then 2)
    log = rows(tmp_path / "run" / "log.jsonl")
    assert [e["round"] for e in log if e["event"] == "prompt-converged"] == [2]
    assert gen.steps == 2 + 2 and patch.scores["generator_steps"] == 4
    assert patch.scores["train_loss_after"] < patch.scores["train_loss_before"]
    adapters = [e for e in log if e["event"] == "adapter"]
    assert adapters and (tmp_path / "run" / adapters[-1]["path"]).is_file()


def test_no_proposal_meets_alpha_so_the_prompt_stays_and_only_the_generator_trains(
    project: Path, tmp_path: Path
) -> None:
    compiled = flowc.compile(project)
    gen = OracleGenerator()
    patch = run(poqd(tmp_path, gen, alpha=100.0), compiled, tmp_path / "run")
    cands = rows(tmp_path / "run" / "candidates.jsonl")
    proposals = [c for c in cands if c["id"].startswith("r1-p")]
    assert len(proposals) == 2 and not any(c["accepted"] for c in proposals)  # kappa proposals, none kept
    assert not any(c["id"].startswith("r2") for c in cands), "ALG1 returned p_old: no second round"
    assert list(patch.params) == ["reader.weights"]  # the prompt stays; the trained adapter is the result
    assert gen.steps == 2  # straight to training to convergence (final_steps)


@pytest.mark.parametrize("limit", [{"frozen": ("reader.weights",)}, {"only": ("decompose",)}])
def test_with_the_weights_frozen_only_the_prompt_is_searched(
    project: Path, tmp_path: Path, limit: dict[str, Any]
) -> None:
    compiled = flowc.compile(project)
    gen = OracleGenerator()
    patch = run(poqd(tmp_path, gen, **limit), compiled, tmp_path / "run")
    assert list(patch.params) == ["decompose.prompt"]
    assert patch.params["decompose.prompt"].startswith("Name the country of the question")
    log = rows(tmp_path / "run" / "log.jsonl")
    assert gen.steps == 0 and not any(e["event"] in ("adapter", "rescored") for e in log)
    assert not list((tmp_path / "run").glob("adapters/*.safetensors"))
    # the accepted prompt starts round 2's search at once (the generator is fixed): it repeats, so it ends
    assert [e["round"] for e in log if e["event"] == "prompt-converged"] == [2]


def test_the_rounds_are_bounded(project: Path, tmp_path: Path) -> None:
    compiled = flowc.compile(project)
    fresh = iter(range(1000))

    def always_new(request: LMRequest) -> str:  # a different instruction every time
        return f"<INS>Name the country, variant {next(fresh)}.</INS>"

    # alpha = 0: a proposal that retrieves the same passages (same loss) is accepted, every round
    opt = poqd(tmp_path, optimizer=always_new, alpha=0.0, max_rounds=3, tau=1, final_steps=1)
    run(opt, compiled, tmp_path / "run")
    accepted = [c["id"] for c in rows(tmp_path / "run" / "candidates.jsonl") if c["accepted"] and c["id"] != "p0"]
    assert accepted == ["r1-p1", "r2-p1", "r3-p1", "result"]
    assert json.loads((tmp_path / "run" / "state.json").read_text())["round"] == 4


def test_training_uses_the_accepted_prompts_passages(project: Path, tmp_path: Path) -> None:
    compiled = flowc.compile(project)
    gen = OracleGenerator()
    run(poqd(tmp_path, gen), compiled, tmp_path / "run")
    # the first training step came after the prompt that names the country was accepted: its
    # minibatch's best passage holds the answer
    assert gen.trained_on and all(gen.trained_on[0])


def test_the_validation_gate_reverts_a_result_that_scores_lower(project: Path, tmp_path: Path) -> None:
    from flowc.runtime.executor import Executor
    from flowc.testing.optimizer_fakes import hurting_pipeline_answer

    compiled = flowc.compile(project)
    capitals = {"France": "Paris", "Spain": "Madrid"}

    def right(request: LMRequest) -> str:  # the reader knows every capital
        text = request_text(request)
        if "Decompose the query" in text:
            return pipeline_answer(request)
        question = text.rsplit("Question:", 1)[1]
        return next((c for k, c in capitals.items() if k in question), "dunno")

    # the base pipeline's requests are answered right, any other about a validation question wrong
    recorder = FunctionLM(right)
    pool = RetrieverPool(tmp_path / "embeddings", encoder=HashEncoder())
    for ex in VAL:
        assert Executor(compiled, lm=recorder, retrievers=pool).run_sync({"question": ex["question"]}).outputs == {
            "answer": ex["answer"]
        }
    hurting = hurting_pipeline_answer({r.key() for r in recorder.calls}, [dict(x) for x in VAL], right)
    opt = poqd(tmp_path, answer=hurting)
    patch = run(opt, compiled, tmp_path / "run")
    assert patch.params == {}
    assert patch.scores["val_after"] == patch.scores["val_before"] == 1.0
    assert any(e["event"] == "gate-reverted" for e in rows(tmp_path / "run" / "log.jsonl"))
    # the gate scored the reader served with the trained adapter (the last one published)
    published = [e["sha256"] for e in rows(tmp_path / "run" / "log.jsonl") if e["event"] == "adapter"]
    served = {r.adapter.sha256 for r in opt.pipeline_lm.calls if r.node == "read" and r.adapter is not None}
    assert published and served == {published[-1]}
    # without the gate the result is kept, and its validation score reported
    kept = run(poqd(tmp_path, answer=hurting, gate=False), compiled, tmp_path / "run2")
    assert kept.params and kept.scores["val_after"] < kept.scores["val_before"]
    assert kept.params["reader.weights"]["sha256"] == published[-1]


def test_a_time_budget_spent_in_training_keeps_the_trained_adapter(project: Path, tmp_path: Path) -> None:
    compiled = flowc.compile(project)

    class Slow(OracleGenerator):
        def train_step(self, *a: Any, **k: Any) -> float:
            import time

            time.sleep(0.4)
            return super().train_step(*a, **k)

    patch = run(poqd(tmp_path, Slow(), final_steps=50), compiled, tmp_path / "run", budget=Budget(seconds=2.0))
    assert patch.stopped_by == "budget: seconds"
    log = rows(tmp_path / "run" / "log.jsonl")
    published = [e["sha256"] for e in log if e["event"] == "adapter"]
    assert published and patch.params["reader.weights"]["sha256"] == published[-1]  # what it trained is returned


# -- the meta-prompt ---------------------------------------------------------------------------------


def test_meta_prompt_lists_the_best_instructions_worst_first() -> None:
    history = [["", 2.0], ["a", 1.0], ["b", 3.0], ["c", 0.5]]
    text = meta_prompt("Decompose: {{question}}", history, [{"question": "Q1?", "answer": "A1"}], max_history=3)
    shown = [line for line in text.splitlines() if line.startswith("<INS>") and line.endswith("</INS>")]
    assert shown == [f"<INS>{EMPTY}</INS>", "<INS>a</INS>", "<INS>c</INS>"]  # b (the worst) left out
    assert "Decompose: {{question}}" in text and "Q: Q1?\nA: A1" in text
    assert "lower loss than all of them" in text


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Sure! <INS>Split by entity.</INS>", "Split by entity."),
        ("<INS>one</INS> and <INS>two</INS>", "two"),
        ("<ins>\n  Quote-free  \n</ins>", "Quote-free"),
        ("<INS>Unclosed to the end", "Unclosed to the end"),
        ("no tags at all", None),
        ("<INS></INS>", None),
        ("<INS>Use {{question}} twice</INS>", None),
        (f"<INS>{EMPTY}</INS>", None),
    ],
)
def test_read_instruction(reply: str, expected: str | None) -> None:
    assert read_instruction(reply) == expected


# -- the pipeline's parts ------------------------------------------------------------------------------


NO_FILTER = [("    filter_subqueries: true\n", ""), ("    query <- question\n", "")]
BM25 = [*NO_FILTER, ("    method: maxsim\n", ""), ("queries <- decompose.subqueries", "query <- question")]


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        (NO_FILTER, "does not filter its sub-queries"),
        ([("    trainable: true\n", "")], "not trainable"),
        (BM25, "one maxsim retrieve node"),
    ],
)
def test_the_pipeline_must_have_poqd_parts(
    project: Path, tmp_path: Path, edits: list[tuple[str, str]], message: str
) -> None:
    import re

    text = project.read_text()
    for pattern, replacement in edits:
        assert re.search(pattern, text), pattern
        text = re.sub(pattern, replacement, text)
    project.write_text(text)
    compiled = flowc.compile(project)
    with pytest.raises(FlowcError) as e:
        run(poqd(tmp_path), compiled, tmp_path / "run")
    assert message in str(e.value)
    span = e.value.diagnostic.span  # the error names the place in the spec to fix
    assert span is not None and span.path == str(project) and span.line > 1


def test_a_reader_that_is_not_embedded_is_refused_by_the_spec(project: Path) -> None:
    """A trainable non-local model is a spec error (adapter-unsupported) before POQD sees it."""
    import re

    from flowc.errors import SpecErrors

    project.write_text(re.sub(r'model reader = "local/gguf:[^"]*"', 'model reader = "openai/x"', project.read_text()))
    with pytest.raises(SpecErrors) as e:
        flowc.compile(project)
    assert "adapter-unsupported" in str(e.value)


# -- the jax generator on a tiny random model -----------------------------------------------------------


@pytest.fixture(scope="module")
def reader(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("jax")
    return tiny_reader(tmp_path_factory.mktemp("tiny"))


def jax_poqd(tmp_path: Path, **settings: Any) -> POQD:
    opt = POQD(
        pipeline_lm=FunctionLM(pipeline_answer),
        optimizer_lm=FunctionLM(optimizer_answer),
        optimizer_model="fake/optimizer",
        **{
            "tau": 2, "kappa": 1, "max_rounds": 1, "final_steps": 2, "batch_size": 2, "micro_batch": 1,
            "rank": 2, "lora_alpha": 4.0, "learning_rate": 0.05, "max_sequence": 256, **settings,
        },
    )  # fmt: skip
    opt.retrievers = RetrieverPool(tmp_path / "embeddings", encoder=HashEncoder())
    return opt


def test_the_generators_loss_is_the_brute_force_one(reader: Path) -> None:
    from flowc.backbone import Backbone
    from flowc.optimizers.poqd.generator import Generator

    gen = Generator(Backbone.load(reader), rank=2, alpha=4.0, learning_rate=0.05, micro_batch=2, max_tokens=256)
    questions = [("Who founded Tulsa?", ["Creek people founded it.", "Paris is in France."], "the Creek"),
                 ("Capital of France?", ["Paris is its capital."], "Paris"),
                 ("Largest ocean?", ["The Pacific.", "Oceans."], "Pacific")]  # fmt: skip
    groups = [[gen.example([{"role": "user", "content": f"{d}\n{q}"}], a) for d in docs] for q, docs, a in questions]
    scores = [[0.6, 0.5], [0.7], [0.9, 0.2]]
    alone = [[float(gen.answer_logprobs([e])[0]) for e in g] for g in groups]
    batched = [list(gen.answer_logprobs(g)) for g in groups]
    assert np.allclose(np.concatenate(batched), np.concatenate(alone), atol=1e-4)
    brute = np.mean(
        [
            -math.log(sum(math.exp(lp) * math.exp(p) for lp, p in zip(lps, log_prior(s), strict=True)))
            for lps, s in zip(alone, scores, strict=True)
        ]
    )
    priors = [list(log_prior(s)) for s in scores]
    assert gen.train_step(groups, priors, k=2) == pytest.approx(brute, rel=1e-4)  # the loss before the step
    after = np.mean([question_loss(gen.answer_logprobs(g), s) for g, s in zip(groups, scores, strict=True)])
    assert after < brute, "one AdamW step lowers the loss it descends"


def test_a_job_killed_in_training_resumes_to_the_same_adapter(reader: Path, tmp_path: Path) -> None:
    project = write_project(tmp_path / "jax-project", reader)
    compiled = flowc.compile(project)
    full = run(jax_poqd(tmp_path), compiled, tmp_path / "full")
    state = json.loads((tmp_path / "full" / "state.json").read_text())
    assert state["gen"]["steps"] >= 2 and state["adapter"]["steps"] == state["gen"]["steps"]

    calls = {"n": 0}
    opt = jax_poqd(tmp_path)

    def killing(base: Path, seed: int) -> Any:
        gen = opt.lora_generator(base, seed)
        train = gen.train_step

        def train_step(*a: Any, **k: Any) -> float:
            calls["n"] += 1
            if calls["n"] == 2:  # in the middle of the second training step
                raise SimulatedKill("killed")
            return train(*a, **k)

        gen.train_step = train_step
        return gen

    opt.generator_factory = killing
    with pytest.raises(SimulatedKill):
        run(opt, compiled, tmp_path / "killed")
    resumed = run(jax_poqd(tmp_path, resume=True), compiled, tmp_path / "killed")
    again = json.loads((tmp_path / "killed" / "state.json").read_text())
    assert again["gen"] == state["gen"] and again["losses"] == state["losses"]
    from safetensors import safe_open

    with (
        safe_open(str(tmp_path / "full" / state["adapter"]["path"]), "np") as one,
        safe_open(str(tmp_path / "killed" / again["adapter"]["path"]), "np") as two,
    ):
        assert one.metadata() == two.metadata() and set(one.keys()) == set(two.keys())
        for key in sorted(one.keys()):  # the same adapter, bit for bit
            assert np.array_equal(one.get_tensor(key), two.get_tensor(key)), key
    from flowc.testing.contracts import comparable

    assert comparable(resumed)["params"] == comparable(full)["params"]  # the same prompt and adapter hash
    assert full.params["reader.weights"]["sha256"] == state["adapter"]["sha256"]
    assert Path(resumed.params["reader.weights"]["path"]).parent == tmp_path / "killed" / "adapters"
    assert resumed.scores["train_loss_after"] == full.scores["train_loss_after"]


# -- settings and the command line -----------------------------------------------------------------------


def test_alpha_tau_kappa_come_from_the_spec_then_the_command_line(project: Path) -> None:
    from flowc.optimizers.factory import Clients, make_optimizer, parse_settings, spec_settings

    text = project.read_text().replace(
        "pipeline poqd_tiny {", "pipeline poqd_tiny {\n  optimize: {poqd: {alpha: 0.05, tau: 2, kappa: 4}, tep: {x: 1}}"
    )
    project.write_text(text)
    compiled = flowc.compile(project)
    settings = {**spec_settings("poqd", compiled), **parse_settings("poqd", ["kappa=7"])}
    assert settings == {"alpha": 0.05, "tau": 2, "kappa": 7}
    opt = make_optimizer(
        "poqd", Clients(FunctionLM(pipeline_answer), FunctionLM(optimizer_answer), "m"), settings=settings
    )
    assert (opt.alpha, opt.tau, opt.kappa) == (0.05, 2, 7)
    for bad, message, at in (("tau: 2.5", "not a valid int", "2.5"), ("alfa: 1", "has no setting 'alfa'", "alfa")):
        project.write_text(text.replace("tau: 2", bad))
        with pytest.raises(FlowcError) as e:
            spec_settings("poqd", flowc.compile(project))
        assert message in str(e.value) and f"{project}:2:" in str(e.value)
        span = e.value.diagnostic.span
        assert span is not None
        line = project.read_text().splitlines()[span.line - 1]
        assert line[span.column - 1 :].startswith(at)  # an unknown name, or the value of the wrong type


def test_flowc_optimize_writes_the_searched_prompt(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flowc.cli.main import main

    monkeypatch.setenv("FLOWC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLOWC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("flowc.runtime.session.default_client", lambda *a, **k: FunctionLM(pipeline_answer))
    monkeypatch.setattr("flowc.runtime.client.ModelClient", lambda *a, **k: FunctionLM(optimizer_answer))
    monkeypatch.setattr("flowc.runtime.retrieval.encoder.MiniLMEncoder", HashEncoder)
    monkeypatch.setattr(POQD, "lora_generator", lambda self, base, seed: OracleGenerator().factory(base, seed))
    for name, data in (("train", TRAIN), ("val", VAL)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in data))
    before = project.read_text()
    args = ["optimize", str(project), "-O", "poqd", "--data", str(tmp_path / "train.jsonl")]
    args += ["--val", str(tmp_path / "val.jsonl"), "--set", "tau=1", "--set", "kappa=2", "--set", "final_steps=1"]
    assert main([*args, "--dry-run"]) == 0
    assert project.read_text() == before
    assert main([*args, "--write", "--run-dir", str(tmp_path / "run")]) == 0
    prompt = flowc.compile(project).params["decompose.prompt"].value
    assert prompt == "Name the country of the question in its own sub-query, number 1.\n\n" + (
        "Decompose the query into sub-queries. Query: {{question}}"
    )
    assert project.read_text().replace(prompt.split("\n\n")[0], "") != before  # written over SPEC
    assert "model reader" in project.read_text() and "filter_subqueries: true" in project.read_text()
    # the trained reader: copied beside the spec with its served GGUF, named by the reader's adapter:
    from flowc.optimizers.base import ParamPatch
    from flowc.spec.adapters import file_sha256, short

    sha = ParamPatch.load(tmp_path / "run" / "patch.json").params["reader.weights"]["sha256"]
    rel = f"adapters/reader-{short(sha)}.safetensors"
    assert f'adapter: "{rel}"' in project.read_text()
    written = flowc.compile(project).adapters["reader"]
    assert written.sha256 == file_sha256(project.parent / rel) == sha and written.served.is_file()
    assert main(["check", str(project)]) == 0  # the adapter fits the reader's base file
