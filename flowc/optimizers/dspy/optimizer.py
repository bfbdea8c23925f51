"""DSPy's optimizers on flowc pipelines: `flowc optimize SPEC -O dspy:MIPROv2` (BootstrapFewShotWithRandomSearch,
GEPA, SIMBA, BootstrapFewShot where the installed DSPy has them).

1. The pipeline becomes its exported DSPy program (flowc.interop.dspy), run with `FlowcAdapter`, so
   DSPy optimizes the very messages flowc sends; each predictor calls its node's model.
2. Every LM call — the program's and the optimizer's own (instruction proposals, reflection) — goes
   through the job's metered, journaled clients (bridge.py): the budget holds at the client, and the
   journal answers the calls of an interrupted job again on `--resume`.
3. The optimized program's instructions and demos come back as flowc params (a ParamPatch), kept only
   if flowc's own evaluation on the validation set does not drop (the gate flowc's optimizers share).

What `--resume` does here: DSPy's optimizers keep no checkpoint flowc can read, so a resumed job runs
the DSPy optimizer again from the start with the same seed; the journal answers every call the
interrupted job had made (nothing is paid twice) and the rest is new. This reproduces the
interrupted run exactly only when DSPy sends the same requests, i.e. with one thread (the default
here; `--set num_threads=N` makes runs faster and resume approximate).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.dspy.bridge import Halted, dspy_lm
from flowc.optimizers.job import Job
from flowc.optimizers.scoring import Metric, accept, growth
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.runtime.lm import LMClient
from flowc.spec.models import ModelDecl


def _require_dspy() -> Any:
    try:
        import dspy
    except ModuleNotFoundError as e:
        if e.name != "dspy":
            raise
        raise FlowcError(
            "unknown-name", "DSPy's optimizers need the 'dspy' package", hint="pip install 'flowc[dspy]'"
        ) from None
    return dspy


@dataclass(kw_only=True)
class DSPyOptimizer(StepOptimizer):
    """Args:
    pipeline_lm / optimizer_lm: the clients of the pipeline's nodes and of the optimizer's own calls.
    optimizer_model: the model id of the optimizer's own calls (MIPROv2's proposer, GEPA's reflection).
    max_bootstrapped_demos / max_labeled_demos: demos per predictor.
    num_candidates: candidate programs (instructions for MIPROv2; demo sets for random search).
    num_trials: MIPROv2's search trials; simba_steps: SIMBA's steps; max_metric_calls: GEPA's budget.
    num_threads: DSPy's threads (1 keeps runs, and so resume, deterministic).
    """

    optimizer_lm: LMClient | None = None
    optimizer_model: str | None = None
    max_bootstrapped_demos: int = 2
    max_labeled_demos: int = 2
    num_candidates: int = 3
    num_trials: int = 3
    simba_steps: int = 2
    max_metric_calls: int = 40
    num_threads: int = 1

    name: ClassVar[str] = "dspy"
    param_kinds: ClassVar[tuple[str, ...]] = ("prompt", "demos")
    teleprompter: ClassVar[str] = ""
    #: DSPy optimizers that call a model of their own (for the job's optimizer client)
    uses_optimizer_lm: ClassVar[bool] = False

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        runs = (self.num_candidates + 1) * (n_train + n_val) + self.num_trials * n_val
        return {
            "validation (flowc, before and after)": (2 * n_val * best, 2 * n_val * worst),
            f"{self.teleprompter} (DSPy; an estimate)": (runs * best, runs * worst),
        }

    # -- DSPy's side -------------------------------------------------------------------------------

    def _teleprompter(self, dspy: Any, metric: Any, reflection_lm: Any, seed: int) -> tuple[Any, dict[str, Any]]:
        cls = getattr(dspy, self.teleprompter, None)
        if cls is None:
            raise FlowcError(
                "unknown-name",
                f"the installed DSPy has no optimizer '{self.teleprompter}'",
                hint="upgrade dspy, or choose one of dspy:MIPROv2, dspy:BootstrapFewShotWithRandomSearch, "
                "dspy:GEPA, dspy:SIMBA",
            )
        demos = {"max_bootstrapped_demos": self.max_bootstrapped_demos, "max_labeled_demos": self.max_labeled_demos}
        t = self.teleprompter
        if t == "MIPROv2":
            tp = cls(
                metric=metric,
                prompt_model=reflection_lm,
                auto=None,
                num_candidates=self.num_candidates,
                num_threads=self.num_threads,
                seed=seed,
                verbose=False,
                **demos,
            )
            return tp, {"num_trials": self.num_trials, "minibatch": False, "requires_permission_to_run": False}
        if t == "BootstrapFewShotWithRandomSearch":
            return cls(
                metric=metric, num_candidate_programs=self.num_candidates, num_threads=self.num_threads, **demos
            ), {}
        if t == "BootstrapFewShot":
            return cls(metric=metric, **demos), {}
        if t == "GEPA":
            tp = cls(
                metric=metric,
                max_metric_calls=self.max_metric_calls,
                reflection_lm=reflection_lm,
                num_threads=self.num_threads,
                seed=seed,
                track_stats=False,
            )
            return tp, {}
        if t == "SIMBA":
            tp = cls(
                metric=metric,
                bsize=4,
                num_candidates=self.num_candidates,
                max_steps=self.simba_steps,
                max_demos=self.max_bootstrapped_demos,
                prompt_model=reflection_lm,
                num_threads=self.num_threads,
            )
            return tp, {"seed": seed}
        return cls(metric=metric), {}

    def _run_dspy(
        self,
        compiled: CompiledPipeline,
        job: Job,
        loop: asyncio.AbstractEventLoop,
        trainset: Sequence[Mapping[str, Any]],
        valset: Sequence[Mapping[str, Any]],
        metric: Metric,
        seed: int,
        halted: Halted,
    ) -> dict[str, Any]:
        """Run the DSPy optimizer (in a worker thread); returns the params of its program."""
        dspy = _require_dspy()
        from flowc.interop.dspy.adapter import FlowcAdapter
        from flowc.interop.dspy.export import load_program, params_from_program

        program = load_program(compiled, retrievers=_retrievers(compiled, job, loop))
        # Each node calls its own model; the adapter picks it by node (DSPy's copies of a program
        # drop per-predictor LMs), and the spec's first model answers anything else.
        node_lms = {}
        for node in program.exported.predictors.values():
            decl = compiled.spec.models[compiled.graph.node(node).model or ""]
            node_lms[node] = dspy_lm(job.pipeline_lm, loop, decl, halted, node)
        first = next(iter(compiled.spec.models.values()))
        default_lm = dspy_lm(job.pipeline_lm, loop, first, halted)
        model = self.optimizer_model or first.id
        reflection = dspy_lm(job.optimizer_lm, loop, ModelDecl(id=model, temperature=1.0), halted)
        names = list(compiled.spec.inputs)

        def score(example: Any, prediction: Any, trace: Any = None, *rest: Any) -> float:
            outputs = {k: prediction.get(k) for k in compiled.spec.outputs}
            return float(metric(outputs, dict(example)))

        def examples(rows: Sequence[Mapping[str, Any]]) -> list[Any]:
            return [dspy.Example(**dict(r)).with_inputs(*names) for r in rows]

        random.seed(seed)
        with dspy.context(adapter=FlowcAdapter(lms=node_lms), lm=default_lm):
            tp, compile_args = self._teleprompter(dspy, score, reflection, seed)
            kwargs: dict[str, Any] = {"trainset": examples(trainset), **compile_args}
            if self.teleprompter not in ("BootstrapFewShot", "SIMBA"):
                kwargs["valset"] = examples(valset)
            optimized = tp.compile(program.instance, **kwargs)
        return params_from_program(compiled, program, optimized)

    # -- the job: the validation baseline (the skeleton's), then one step: DSPy's run and the gate --

    def finished(self, run: Run) -> bool:
        return bool(run.state.get("done"))

    def max_steps(self) -> int | None:
        return 1

    async def step(self, run: Run) -> StepReport:
        halted = Halted()
        # DSPy runs in a worker thread; its calls come back to this loop, where the job's clients
        # live (their connections and rate limiters belong to it).
        loop = asyncio.get_running_loop()
        args = (run.compiled, run.job, loop, run.trainset, run.valset, run.metric, run.seed, halted)
        try:
            params = await asyncio.to_thread(self._run_dspy, *args)
        except Exception:
            if halted.error is None:
                raise
            params = {}
        if halted.error is not None:
            raise halted.error  # the budget (the skeleton stops with the baseline) or a kill
        params = {k: v for k, v in params.items() if k in run.params}
        run.state["done"] = True
        run.log(event="dspy", teleprompter=self.teleprompter, params=sorted(params))
        if not params:  # DSPy kept the program as it was
            run.candidate(id="dspy", parent="base", params=[], scores={"val": run.val_best}, accepted=False)
            return StepReport(accepted=None, phase=self.teleprompter)
        run.state["updates"] += 1
        val = await run.validate(params)
        accepted = val is not None and accept(val, run.val_best, growth=growth(run.values, params))
        run.candidate(
            id="dspy",
            parent="base",
            params=sorted(params),
            scores={"val": val if val is not None else 0.0, "val_before": run.val_best},
            accepted=accepted,
        )
        if accepted:
            run.keep(params, val=val, candidate="dspy", rationale=dict.fromkeys(params, f"DSPy {self.teleprompter}"))
        return StepReport(val=val, accepted=accepted, phase=self.teleprompter)


def _retrievers(compiled: CompiledPipeline, job: Job, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
    """The program's retrieval callables: flowc's own retrievers over the spec's corpora."""
    out: dict[str, Any] = {}
    pool = job.scorer.retrievers
    for name, corpus in compiled.spec.corpora.items():
        path = compiled.spec.base_dir / corpus.path

        def search(query: Any, k: int, path: Path = path) -> list[dict[str, Any]]:
            retriever = asyncio.run_coroutine_threadsafe(pool.get(path, "bm25"), loop).result()
            if isinstance(query, list):
                return [h.to_dict() for h in retriever.search(" ".join(query), k)]
            return [h.to_dict() for h in retriever.search(str(query), k)]

        out[name] = search
    return out


def _make(teleprompter: str, own_lm: bool) -> type[DSPyOptimizer]:
    cls = type(
        f"DSPy{teleprompter}",
        (DSPyOptimizer,),
        {"name": f"dspy:{teleprompter}", "teleprompter": teleprompter, "uses_optimizer_lm": own_lm},
    )
    cls.__doc__ = f"DSPy's {teleprompter} on a flowc pipeline (see the module docstring)."
    return cls


MIPROv2 = _make("MIPROv2", True)
BootstrapFewShotWithRandomSearch = _make("BootstrapFewShotWithRandomSearch", False)
BootstrapFewShot = _make("BootstrapFewShot", False)
GEPA = _make("GEPA", True)
SIMBA = _make("SIMBA", True)
