"""TEP — Textual Equilibrium Propagation (ALGORITHMS.md §2), flowc's reference implementation.

No public implementation exists; the paper's text was not available either. Every choice below is
explicit, documented in docs/tep.md, and exposed as a parameter with the defaults the reviews
and summaries report (T_free 20, W 3, T_nudge 40, actor temperature ~ U(0.3, 0.9), annealed nudging).

Free phase (per node, all nodes in parallel): run the pipeline on a minibatch at a sampled actor
temperature; a *local* critic scores only that node's own inputs/outputs against its rubric
(task-independent dimensions plus the node's criteria) and suggests at most K short edits; the node's
prompt is rewritten from those suggestions; the update is kept only if the validation metric does not
drop. A node stops at equilibrium: the critic reports nothing further to improve, or its overall score
is stable over the last W evaluations (variance below `stability_var`), or after T_free iterations.

Nudged phase: the task objective and the system's aggregate outcome on the minibatch (score, a few
failing examples' final answers against the expected ones) are sent *forward* to every node's critic
as one message of fixed size (reading A; `forward_signal="B"` adds, per node, its own output on a
failing example next to the expected final answer — a local contrast standing in for the clamped
re-run the paper may mean). Edits are proximal: the update is told to change at most ⌈β·sentences⌉
sentences, and is rejected unless its normalized token edit distance to the current prompt is ≤ β;
β starts at β0 and decays by ρ each round. Capped at T_nudge, validation-gated, same equilibrium rule.

Feedback reaching a node is O(1) in depth: its critic sees its own samples, its rubric and the fixed
task message — never a chain of downstream feedback.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError
from flowc.optimizers.base import trainable_params
from flowc.optimizers.scoring import Evaluation
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.optimizers.tep import messages
from flowc.optimizers.tep.critic import TemperatureLM, parse_critic
from flowc.optimizers.tep.critic import prompt as _prompt
from flowc.optimizers.tep.edits import edit_ratio
from flowc.optimizers.tep.gate import GATES, validation_gate
from flowc.optimizers.tep.rubric import render, rubric_for
from flowc.optimizers.tep.update import propose_edit
from flowc.runtime.lm import LMClient, LMRequest, chat
from flowc.spec.models import LLMNode, MapNode


@dataclass
class TEP(StepOptimizer):
    """Args (defaults from ALGORITHMS.md §2.6; the (inferred) ones are flowc's choices):
    pipeline_lm / optimizer_lm / optimizer_model: the actor, and the critic-and-updater.
    t_free, window, t_nudge: iteration caps and the stability window W.
    stability_var: the variance of the last W overall critic scores (1–5) below which a node is
        at equilibrium (0.5, as one summary reports).
    beta0, decay: the nudge strength / proximal bound, annealed per round (0.3, 0.9 (inferred)).
    rounds, patience: free+nudged rounds run until the validation score plateaus — `patience`
        rounds in a row without a gain (1) — and at most `rounds` (5) (inferred).
    actor_temperature: the range the pipeline's sampling temperature is drawn from per iteration.
    batch_size: examples per minibatch. max_suggestions / suggestion_words: the critic's bound.
    max_failures: failing examples in the forward task message. forward_signal: "A" or "B".
    validate: the validation gate. gate (tep/gate.py): "joint" scores all proposals together, then
        each half if that fails (at most 3 validation passes: linear cost in depth); "per_node" each
        proposal alone, then the kept ones together ((proposals + 1) passes); "joint_first" all
        together first, else per_node.
    only / frozen / resume / progress: see `StepOptimizer`.
    """

    optimizer_lm: LMClient
    optimizer_model: str
    t_free: int = 20
    window: int = 3
    stability_var: float = 0.5
    t_nudge: int = 40
    beta0: float = 0.3
    decay: float = 0.9
    rounds: int = 5
    patience: int = 1
    actor_temperature: tuple[float, float] = (0.3, 0.9)
    critic_temperature: float = 0.0
    batch_size: int = 3
    max_suggestions: int = 3
    suggestion_words: int = 40
    max_failures: int = 2
    forward_signal: str = "A"
    validate: bool = True
    gate: str = "joint"
    max_tokens: int = 600
    stats: list[dict[str, Any]] = field(default_factory=list)

    name: ClassVar[str] = "tep"
    param_kinds: ClassVar[tuple[str, ...]] = ("prompt", "system")
    #: the settings `flowc optimize --steps N` sets (the per-phase iteration caps)
    step_fields: ClassVar[tuple[str, ...]] = ("t_free", "t_nudge")

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        nodes = len(trainable_params(compiled, self.only, self.frozen, kinds=self.param_kinds))
        b = min(self.batch_size, n_train)
        iters = self.rounds * (self.t_free + self.t_nudge)
        return {
            "validation baseline": (n_val * best, n_val * worst),
            "forward (minibatches)": (self.rounds * b * best, iters * b * worst),
            "critics": (self.rounds * nodes, iters * nodes),
            "updates (one retry)": (0, iters * nodes * 2),
            "validation gate": (0, iters * self._gate_passes(nodes) * n_val * worst),
        }

    def _gate_passes(self, nodes: int) -> int:
        """The most validation passes the gate runs in one iteration."""
        if self.gate == "joint":
            return min(nodes, 3)
        return nodes + 1 + (1 if self.gate == "joint_first" else 0)

    # -- the skeleton's hooks ---------------------------------------------------------------------

    def check(self, compiled: CompiledPipeline, params: list[str]) -> None:
        if self.forward_signal not in ("A", "B"):
            raise FlowcError("invalid-value", f"forward_signal must be 'A' or 'B', not {self.forward_signal!r}")
        if self.gate not in GATES:
            raise FlowcError("invalid-value", f"gate must be one of {', '.join(GATES)}, not {self.gate!r}")

    def fresh_state(self, run: Run) -> dict[str, Any]:
        return {
            "round": 0,
            "phase": "free",
            "iteration": 0,
            "history": {p: [] for p in run.params},
            "done": [],
            "free_suggestions": {p: [] for p in run.params},
            "unreadable": dict.fromkeys(run.params, 0),
            "attempted": 0,
            "round_start_val": None,  # the validation score when the round started
            "flat_rounds": 0,  # rounds in a row that did not raise it
        }

    async def start(self, run: Run) -> None:
        # the baseline is scored even without the gate: the patch reports it
        run.state["val_base"] = run.state["val_best"] = (await run.evaluate(run.compiled, run.valset)).mean
        run.state["round_start_val"] = run.state["val_best"]

    def finished(self, run: Run) -> bool:
        """Settles the phase (a phase ends at its cap or when every node is at equilibrium; a round
        ends after its nudged phase) and stops once the validation score has plateaued."""
        st = run.state
        while st["round"] < self.rounds and st["flat_rounds"] < self.patience:
            cap = self.t_free if st["phase"] == "free" else self.t_nudge
            if st["iteration"] < cap and any(p not in st["done"] for p in run.params):
                return False
            self._next_phase(st)
        return True

    def max_steps(self) -> int | None:
        return self.rounds * (self.t_free + self.t_nudge)

    def extra_scores(self, state: Mapping[str, Any]) -> dict[str, float]:
        return {"attempted_updates": float(state.get("attempted", 0))}

    def _next_phase(self, st: dict[str, Any]) -> None:
        st["iteration"] = 0
        st["done"] = []
        st["history"] = {p: [] for p in st["history"]}
        st["unreadable"] = dict.fromkeys(st["history"], 0)
        if st["phase"] == "free":
            st["phase"] = "nudged"
            return
        st["phase"] = "free"
        st["round"] += 1
        gained = float(st["val_best"] or 0.0) > float(st["round_start_val"] or 0.0)
        st["flat_rounds"] = 0 if gained else int(st["flat_rounds"]) + 1
        st["round_start_val"] = st["val_best"]

    def beta(self, st: Mapping[str, Any]) -> float:
        return self.beta0 * self.decay ** int(st["round"])

    # -- one iteration: every active node, in parallel ------------------------------------------

    async def step(self, run: Run) -> StepReport:
        st = run.state
        step = run.step
        active = [p for p in run.params if p not in st["done"]]
        rng = run.rng()
        temperature = round(rng.uniform(*self.actor_temperature), 3)
        batch = run.minibatch(rng, self.batch_size)
        current = run.current()
        forward = await run.evaluate(current, batch, lm=TemperatureLM(run.job.pipeline_lm, temperature))
        nudged = st["phase"] == "nudged"
        task = (
            messages.task_message(current, forward, run.metric, beta=self.beta(st), max_failures=self.max_failures)
            if nudged
            else ""
        )
        results = await asyncio.gather(*(self._node(run, current, p, forward, task) for p in active))
        entries = dict(zip(active, results, strict=True))
        proposals = {p: e["prompt_after"] for p, e in entries.items() if e.get("prompt_after") is not None}
        gate = await validation_gate(run, proposals, mode=self.gate, validate=self.validate)
        for p, s in gate.scores.items():
            run.candidate(
                id=f"step{step}:{p}",
                parent=f"step{step - 1}",
                params={p: proposals[p]},
                scores={"val": s if s is not None else -1.0},
                accepted=p in gate.accepted,
                phase=st["phase"],
                gate=gate.mode,
            )
        # updates: every active node of every iteration (as TextGrad counts params × steps); effective:
        # those whose prompt changed and passed the validation gate; attempted: those whose critic was
        # not at equilibrium, so an update call was made
        attempted = [p for p, e in entries.items() if e["event"] == "proposal"]
        st["updates"] += len(active)
        st["attempted"] = int(st.get("attempted", 0)) + len(attempted)
        for p in gate.accepted:
            run.keep(
                {p: proposals[p]},
                val=gate.final,
                candidate=f"step{step}:{p}",
                parent=f"step{step - 1}",
                rationale={p: "; ".join(entries[p]["suggestions"])},
            )
        for p, e in entries.items():
            if e["event"] == "proposal":
                e.update(val=gate.scores.get(p), accepted=p in gate.accepted)
            run.log(**e, batch_train=forward.mean, temperature=temperature)
        self.stats.append(
            {
                "step": step,
                "phase": st["phase"],
                "round": st["round"],
                "temperature": temperature,
                "accepted": sorted(gate.accepted),
                "proposed": sorted(proposals),
                "attempted": sorted(attempted),
                "feedback_chars": {p: e["feedback_chars"] for p, e in entries.items()},
                "feedback": {p: e["feedback"] for p, e in entries.items()},
                "critic_prompt_chars": {p: e["critic_prompt_chars"] for p, e in entries.items()},
            }
        )
        st["iteration"] += 1
        return StepReport(
            train=forward.mean,
            val=gate.final,
            accepted=bool(gate.accepted) if proposals else None,
            phase=f"{st['phase']} r{st['round']}",
        )

    async def _node(
        self, run: Run, current: CompiledPipeline, param: str, forward: Evaluation, task: str
    ) -> dict[str, Any]:
        """Critic, equilibrium test and (unless at equilibrium) the update of one node. Returns the
        node's log row (`prompt_after` holds the proposal, None when there is none)."""
        st = run.state
        node_name = current.params[param].node or ""
        spec_node = current.spec.nodes[node_name]
        llm = spec_node.body if isinstance(spec_node, MapNode) else spec_node
        assert isinstance(llm, LLMNode)
        kind = current.params[param].kind
        role = current.params[param].role or node_name
        rubric = rubric_for(role, list(llm.criteria))
        # the text under review: the node's prompt template or its system prompt (each trains alone)
        what = "system prompt" if kind == "system" else "prompt template"
        described = f"the {what} of the '{node_name}' step ({role})"
        samples = messages.samples(forward, node_name)
        if st["phase"] == "nudged" and self.forward_signal == "B":
            task += messages.contrast(forward, node_name, run.metric)
        prompt_before = str(st["values"][param])
        user = _prompt(
            "critic_user",
            role=described,
            prompt=prompt_before,
            samples=samples or "(this step did not run on the minibatch)",
            rubric=render(rubric),
            task=task,
        )
        system = _prompt("critic_system", max_suggestions=self.max_suggestions, max_words=self.suggestion_words)
        reply = await self._call(run, f"tep:critic:{param}", system, user, self.critic_temperature)
        critic = parse_critic(reply, rubric, self.max_suggestions, self.suggestion_words)
        hist = st["history"][param]
        hist.append(critic.overall)
        stable = (
            len(hist) >= self.window
            and all(h is not None for h in hist[-self.window :])
            and statistics.pvariance([h for h in hist[-self.window :] if h is not None]) < self.stability_var
        )
        # W unreadable replies in a row end the phase for this node (a critic that cannot follow the
        # format will not start to); a readable reply without scores is not unreadable
        misses = st.setdefault("unreadable", {})
        misses[param] = 0 if critic.readable else int(misses.get(param, 0)) + 1
        unreadable_run = misses[param] >= self.window
        entry: dict[str, Any] = {
            "phase": st["phase"],
            "round": st["round"],
            "node": node_name,
            "param": param,
            "critic_scores": critic.scores,
            "overall": critic.overall,
            "suggestions": list(critic.suggestions),
            "readable": critic.readable,
            "critic_prompt_chars": len(user),
            "feedback": [],  # the feedback this param's update received (none at equilibrium)
            "feedback_chars": 0,
        }
        if critic.no_change or stable or unreadable_run or not critic.suggestions:
            reason = (
                "critic: no further improvement"
                if critic.no_change
                else "scores stable"
                if stable
                else "critic unreadable"
                if unreadable_run
                else "no suggestion"
            )
            if reason != "no suggestion":
                st["done"].append(param)
            return {**entry, "event": "equilibrium" if reason != "no suggestion" else "no-update", "reason": reason}
        nudged = st["phase"] == "nudged"
        if not nudged:
            st["free_suggestions"][param] = list(critic.suggestions)

        async def ask(who: str, system: str, user: str) -> str:
            return await self._call(run, who, system, user, 0.0)

        free = st["free_suggestions"][param] if nudged else list(critic.suggestions)
        new, attempts = await propose_edit(
            ask,
            param=param,
            role=described,
            prompt=prompt_before,
            free=free,
            nudge=critic.suggestions,
            beta=self.beta(st) if nudged else None,
        )
        # what reached the update: the critic's suggestions (nudged: and the free-phase ones it keeps);
        # the task message went to the critic, not to the update
        received = [*free, *(critic.suggestions if nudged else ())]
        return {
            **entry,
            "feedback": received,
            "feedback_chars": sum(len(x) for x in received),
            "event": "proposal",
            "prompt_before": prompt_before,
            "prompt_after": new,
            "edit_ratio": edit_ratio(prompt_before, new) if new is not None else None,
            "beta": self.beta(st) if nudged else None,
            "attempts": attempts,
        }

    async def _call(self, run: Run, who: str, system: str, user: str, temperature: float) -> str:
        req = LMRequest(
            model=self.optimizer_model,
            messages=chat(system, user),
            temperature=temperature,
            max_tokens=self.max_tokens,
            node=who,
            seed=0 if temperature > 0 else None,
        )
        return (await run.job.optimizer_lm.complete(req)).text
