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
import json
import math
import random
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError, SpecErrors
from flowc.optimizers.base import AsyncOptimizer, ParamPatch, Provenance, trainable_params
from flowc.optimizers.budget import Budget, BudgetExceeded
from flowc.optimizers.job import Job
from flowc.optimizers.scoring import Evaluation, Metric, accept
from flowc.optimizers.tep.critic import CriticResult, TemperatureLM, parse_critic
from flowc.optimizers.tep.critic import prompt as _prompt
from flowc.optimizers.tep.edits import edit_ratio, sentences
from flowc.optimizers.tep.rubric import render, rubric_for
from flowc.runtime.lm import LMClient, LMRequest, chat
from flowc.spec.models import LLMNode, MapNode
from flowc.spec.template import placeholders


@dataclass
class TEP(AsyncOptimizer):
    """Args (defaults from ALGORITHMS.md §2.6; the (inferred) ones are flowc's choices):
    pipeline_lm / optimizer_lm / optimizer_model: the actor, and the critic-and-updater.
    t_free, window, t_nudge: iteration caps and the stability window W.
    stability_var: the variance of the last W overall critic scores (1–5) below which a node is
        at equilibrium (0.5, as one summary reports).
    beta0, decay: the nudge strength / proximal bound, annealed per round (0.3, 0.9 (inferred)).
    rounds: free+nudged rounds (1 (inferred)).
    actor_temperature: the range the pipeline's sampling temperature is drawn from per iteration.
    batch_size: examples per minibatch. max_suggestions / suggestion_words: the critic's bound.
    max_failures: failing examples in the forward task message. forward_signal: "A" or "B".
    validate: the validation gate. gate: "per_node" scores each node's proposal alone, then the kept
        ones together ((proposals + 1) validation passes); "joint_first" scores all proposals together
        first and keeps them all if that does not drop, falling back to per_node otherwise (one pass
        when the edits help, which matters on deep pipelines).
    """

    pipeline_lm: LMClient
    optimizer_lm: LMClient
    optimizer_model: str
    t_free: int = 20
    window: int = 3
    stability_var: float = 0.5
    t_nudge: int = 40
    beta0: float = 0.3
    decay: float = 0.9
    rounds: int = 1
    actor_temperature: tuple[float, float] = (0.3, 0.9)
    critic_temperature: float = 0.0
    batch_size: int = 3
    max_suggestions: int = 3
    suggestion_words: int = 40
    max_failures: int = 2
    forward_signal: str = "A"
    validate: bool = True
    gate: str = "per_node"
    only: Sequence[str] | None = None
    frozen: Sequence[str] = ()
    resume: bool = False
    max_tokens: int = 600
    stats: list[dict[str, Any]] = field(default_factory=list)

    name: ClassVar[str] = "tep"
    #: the settings `flowc optimize --steps N` sets (the per-phase iteration caps)
    step_fields: ClassVar[tuple[str, ...]] = ("t_free", "t_nudge")

    def settings(self) -> dict[str, Any]:
        keys = (
            "t_free",
            "window",
            "stability_var",
            "t_nudge",
            "beta0",
            "decay",
            "rounds",
            "critic_temperature",
            "batch_size",
            "max_suggestions",
            "suggestion_words",
            "max_failures",
            "forward_signal",
            "validate",
            "gate",
        )
        return {
            **{k: getattr(self, k) for k in keys},
            "actor_temperature": list(self.actor_temperature),
            "only": list(self.only or []),
            "frozen": list(self.frozen),
            "model": self.optimizer_model,
        }

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        nodes = len(trainable_params(compiled, self.only, self.frozen, kinds=("prompt",)))
        b = min(self.batch_size, n_train)
        iters = self.rounds * (self.t_free + self.t_nudge)
        return {
            "validation baseline": (n_val * best, n_val * worst),
            "forward (minibatches)": (self.rounds * b * best, iters * b * worst),
            "critics": (self.rounds * nodes, iters * nodes),
            "updates (one retry)": (0, iters * nodes * 2),
            "validation gate": (0, iters * (nodes + 1) * n_val * worst),
        }

    async def optimize_async(
        self,
        compiled: CompiledPipeline,
        *,
        trainset: Sequence[Mapping[str, Any]],
        valset: Sequence[Mapping[str, Any]],
        metric: Metric,
        budget: Budget,
        seed: int,
        run_dir: Path | None = None,
    ) -> ParamPatch:
        params = trainable_params(compiled, self.only, self.frozen, kinds=("prompt",))
        if not params:
            raise FlowcError(
                "invalid-value",
                f"pipeline '{compiled.name}' has no trainable prompt to optimize",
                hint="mark an llm node 'trainable: true', or check --only/--freeze",
            )
        if self.forward_signal not in ("A", "B"):
            raise FlowcError("invalid-value", f"forward_signal must be 'A' or 'B', not {self.forward_signal!r}")
        if self.gate not in ("per_node", "joint_first"):
            raise FlowcError("invalid-value", f"gate must be 'per_node' or 'joint_first', not {self.gate!r}")
        job = Job(
            self.name,
            compiled,
            pipeline_lm=self.pipeline_lm,
            optimizer_lm=self.optimizer_lm,
            budget=budget,
            seed=seed,
            trainset=trainset,
            valset=valset,
            settings=self.settings(),
            run_dir=run_dir,
            resume=self.resume,
        )
        st: dict[str, Any] = job.state or {
            "step": 0,
            "round": 0,
            "phase": "free",
            "iteration": 0,
            "values": {p: compiled.params[p].value for p in params},
            "val_base": None,
            "val_best": None,
            "history": {p: [] for p in params},
            "done": [],
            "free_suggestions": {p: [] for p in params},
            "unreadable": dict.fromkeys(params, 0),
            "updates": 0,
            "effective": 0,
        }
        stopped = None
        try:
            if st["val_base"] is None:
                st["val_base"] = st["val_best"] = (await job.scorer.evaluate(compiled, valset, metric)).mean
                job.checkpoint(st["step"], st)
            while st["round"] < self.rounds:
                cap = self.t_free if st["phase"] == "free" else self.t_nudge
                active = [p for p in params if p not in st["done"]]
                if st["iteration"] >= cap or not active:
                    self._next_phase(st)
                    job.checkpoint(st["step"], st)
                    continue
                await self._iteration(job, compiled, active, st, trainset, valset, metric, seed)
                st["iteration"] += 1
                st["step"] += 1
                job.checkpoint(st["step"], st)
        except BudgetExceeded as e:
            stopped = f"budget: {e.axis}"
        finally:
            job.close()
        changed = {p: v for p, v in st["values"].items() if v != compiled.params[p].value}
        prov = {
            p: Provenance(
                optimizer=self.name,
                step=st["step"],
                candidate=f"step{st['step']}",
                parent="base",
                scores={"val_before": st["val_base"] or 0.0, "val_after": st["val_best"] or 0.0},
                rationale="; ".join(st["free_suggestions"].get(p, []))[:500],
            )
            for p in changed
        }
        return ParamPatch(
            pipeline=compiled.name,
            base_hash=compiled.hash,
            optimizer=self.name,
            seed=seed,
            params=changed,
            provenance=prov,
            scores={
                "val_before": st["val_base"] or 0.0,
                "val_after": st["val_best"] or 0.0,
                "updates": st["updates"],
                "attempted_updates": st.get("attempted", 0),
                "effective_updates": st["effective"],
            },
            budget_used=job.meter.used(),
            stopped_by=stopped,
        )

    def _next_phase(self, st: dict[str, Any]) -> None:
        st["iteration"] = 0
        st["done"] = []
        st["history"] = {p: [] for p in st["history"]}
        st["unreadable"] = dict.fromkeys(st["history"], 0)
        if st["phase"] == "free":
            st["phase"] = "nudged"
        else:
            st["phase"] = "free"
            st["round"] += 1

    def beta(self, st: Mapping[str, Any]) -> float:
        return self.beta0 * self.decay ** int(st["round"])

    # -- one iteration: every active node, in parallel ------------------------------------------

    async def _iteration(
        self,
        job: Job,
        base: CompiledPipeline,
        active: list[str],
        st: dict[str, Any],
        trainset: Sequence[Mapping[str, Any]],
        valset: Sequence[Mapping[str, Any]],
        metric: Metric,
        seed: int,
    ) -> None:
        step = st["step"] + 1
        rng = random.Random(seed * 1_000_003 + step)
        temperature = round(rng.uniform(*self.actor_temperature), 3)
        batch = [trainset[i] for i in rng.sample(range(len(trainset)), min(self.batch_size, len(trainset)))]
        current = base.with_params(st["values"])
        actor = TemperatureLM(job.pipeline_lm, temperature)
        from flowc.optimizers.scoring import Scorer

        forward = await Scorer(actor, tools=job.scorer.tools, retrievers=job.scorer.retrievers).evaluate(
            current, batch, metric
        )
        nudged = st["phase"] == "nudged"
        task = self._task_message(current, forward, metric, st) if nudged else ""
        results = await asyncio.gather(*(self._node(job, current, p, forward, task, st, step, metric) for p in active))
        entries = dict(zip(active, results, strict=True))
        proposals = {p: e["prompt_after"] for p, e in entries.items() if e.get("prompt_after") is not None}
        accepted, val = await self._gate(job, base, st, proposals, valset, metric, step)
        # updates: every active node of every iteration (as TextGrad counts params × steps); effective:
        # those whose prompt changed and passed the validation gate; attempted: those whose critic was
        # not at equilibrium, so an update call was made
        attempted = [p for p, e in entries.items() if e["event"] == "proposal"]
        st["updates"] += len(active)
        st["attempted"] = int(st.get("attempted", 0)) + len(attempted)
        st["effective"] += len(accepted)
        for p in accepted:
            st["values"][p] = proposals[p]
        for p, e in entries.items():
            if e["event"] == "proposal":
                e.update(val=val.get(p), accepted=p in accepted)
            job.log(**e, batch_train=forward.mean, temperature=temperature)
        self.stats.append(
            {
                "step": step,
                "phase": st["phase"],
                "round": st["round"],
                "temperature": temperature,
                "accepted": sorted(accepted),
                "proposed": sorted(proposals),
                "attempted": sorted(attempted),
                "feedback_chars": {p: e["feedback_chars"] for p, e in entries.items()},
                "critic_prompt_chars": {p: e["critic_prompt_chars"] for p, e in entries.items()},
            }
        )

    async def _node(
        self,
        job: Job,
        current: CompiledPipeline,
        param: str,
        forward: Evaluation,
        task: str,
        st: dict[str, Any],
        step: int,
        metric: Metric,
    ) -> dict[str, Any]:
        """Critic, equilibrium test and (unless at equilibrium) the update of one node. Returns the
        node's log row (`prompt_after` holds the proposal, None when there is none)."""
        node_name = current.params[param].node or ""
        spec_node = current.spec.nodes[node_name]
        llm = spec_node.body if isinstance(spec_node, MapNode) else spec_node
        assert isinstance(llm, LLMNode)
        role = current.params[param].role or node_name
        rubric = rubric_for(role, list(llm.criteria))
        samples = self._samples(forward, node_name)
        if st["phase"] == "nudged" and self.forward_signal == "B":
            task += self._contrast(forward, node_name, metric)
        prompt_before = str(st["values"][param])
        user = _prompt(
            "critic_user",
            role=f"the '{node_name}' step ({role})",
            prompt=prompt_before,
            samples=samples or "(this step did not run on the minibatch)",
            rubric=render(rubric),
            task=task,
        )
        system = _prompt("critic_system", max_suggestions=self.max_suggestions, max_words=self.suggestion_words)
        reply = await self._call(job, f"tep:critic:{param}", system, user, self.critic_temperature)
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
        # what reaches this node's update: its critic's suggestions (in the nudged phase also the
        # free-phase ones the update keeps) and the task message its critic was given
        carried = st["free_suggestions"].get(param, []) if st["phase"] == "nudged" else []
        feedback_chars = sum(len(s) for s in critic.suggestions) + sum(len(s) for s in carried) + len(task)
        entry: dict[str, Any] = {
            "step": step,
            "phase": st["phase"],
            "round": st["round"],
            "node": node_name,
            "param": param,
            "critic_scores": critic.scores,
            "overall": critic.overall,
            "suggestions": list(critic.suggestions),
            "readable": critic.readable,
            "feedback_chars": feedback_chars,
            "critic_prompt_chars": len(user),
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
        if st["phase"] == "free":
            st["free_suggestions"][param] = list(critic.suggestions)
        new, attempts = await self._update(job, param, node_name, role, prompt_before, critic, st)
        return {
            **entry,
            "event": "proposal",
            "prompt_before": prompt_before,
            "prompt_after": new,
            "edit_ratio": edit_ratio(prompt_before, new) if new is not None else None,
            "beta": self.beta(st) if st["phase"] == "nudged" else None,
            "attempts": attempts,
        }

    async def _update(
        self, job: Job, param: str, node: str, role: str, prompt: str, critic: CriticResult, st: dict[str, Any]
    ) -> tuple[str | None, list[dict[str, Any]]]:
        """The rewrite, retried once when the reply has no prompt, changes the placeholders or (nudged)
        edits more than β; returns the new prompt (None: no usable change) and why attempts failed."""
        nudged = st["phase"] == "nudged"
        beta = self.beta(st)
        max_sent = math.ceil(beta * sentences(prompt)) if nudged else sentences(prompt)
        keep = sorted({ph.name for ph in placeholders(prompt)})
        free = "\nSuggestions from the local critic:\n" + "\n".join(
            f"- {s}" for s in (st["free_suggestions"][param] if nudged else critic.suggestions)
        )
        nudge = (
            (
                "\nSuggestions weighed by the pipeline's task objective (apply these with priority):\n"
                + "\n".join(f"- {s}" for s in critic.suggestions)
            )
            if nudged
            else ""
        )
        system = _prompt("update_system", max_sentences=max_sent)
        user = _prompt(
            "update_user",
            role=f"the '{node}' step ({role})",
            prompt=prompt,
            free=free,
            nudged=nudge,
            max_sentences=max_sent,
            placeholders=", ".join("{{" + k + "}}" for k in keep) or "(none)",
        )
        attempts: list[dict[str, Any]] = []
        for _attempt in range(2):
            reply = await self._call(job, f"tep:update:{param}", system, user, 0.0)
            m = re.search(r"<PROMPT>(.*?)</PROMPT>", reply, re.S)
            new = m.group(1).strip("\n") if m else None
            if new is None or not new.strip():
                attempts.append({"rejected": "no prompt in the reply"})
                user += "\n\nYour reply had no <PROMPT>...</PROMPT>. Reply again with the whole new prompt in the tags."
                continue
            if {ph.name for ph in placeholders(new)} != set(keep):
                attempts.append({"rejected": "placeholders changed", "prompt": new})
                user += f"\n\nYour prompt changed the placeholders; keep exactly: {', '.join(keep) or '(none)'}."
                continue
            ratio = edit_ratio(prompt, new)
            if nudged and ratio > beta:
                attempts.append({"rejected": "edit above beta", "edit_ratio": ratio, "prompt": new})
                user += (
                    f"\n\nThat edit changed {ratio:.0%} of the prompt; the limit is {beta:.0%}. Make a smaller edit."
                )
                continue
            attempts.append({"accepted": new != prompt, "edit_ratio": ratio})
            return (new if new != prompt else None), attempts
        return None, attempts

    async def _gate(
        self,
        job: Job,
        base: CompiledPipeline,
        st: dict[str, Any],
        proposals: dict[str, str],
        valset: Sequence[Mapping[str, Any]],
        metric: Metric,
        step: int,
    ) -> tuple[list[str], dict[str, float | None]]:
        """Keep each node's update only if validation does not drop; then check they hold together.
        Returns the accepted params and each proposal's validation score (None: it did not compile)."""
        if not proposals:
            return [], {}
        best = float(st["val_best"] or 0.0)

        async def score(values: dict[str, Any]) -> float | None:
            try:
                cand = base.with_params(values)
            except SpecErrors:
                return None
            return (await job.scorer.evaluate(cand, valset, metric)).mean if self.validate else best

        joint: float | None = None
        if self.gate == "joint_first" and len(proposals) > 1:
            joint = await score({**st["values"], **proposals})
        joint_ok = joint is not None and accept(joint, best)
        if joint_ok:
            scored: dict[str, float | None] = dict.fromkeys(proposals, joint)
            accepted, final_score = list(proposals), joint
        else:
            singles = await asyncio.gather(*(score({**st["values"], p: v}) for p, v in proposals.items()))
            scored = dict(zip(proposals, singles, strict=True))
            accepted = [p for p, s in scored.items() if s is not None and accept(s, best)]
            final_score = max((scored[p] or 0.0 for p in accepted), default=best)
        if len(accepted) > 1 and not joint_ok:
            if self.gate == "joint_first" and len(accepted) == len(proposals):
                together = joint  # the joint pass already scored exactly these
            else:
                together = await score({**st["values"], **{p: proposals[p] for p in accepted}})
            if together is None or not accept(together, best):
                top = max(accepted, key=lambda p: scored[p] or 0.0)
                accepted = [top]
            else:
                final_score = together
        if accepted:
            st["val_best"] = final_score
        for p, s in scored.items():
            job.candidate(
                step=step,
                id=f"step{step}:{p}",
                parent=f"step{step - 1}",
                params={p: proposals[p]},
                scores={"val": s if s is not None else -1.0},
                accepted=p in accepted,
                phase=st["phase"],
                gate="joint" if joint_ok else "per_node",
            )
        return accepted, scored

    # -- messages ---------------------------------------------------------------------------------

    def _samples(self, forward: Evaluation, node: str) -> str:
        out = []
        for i, item in enumerate(forward.items, 1):
            step = next((s for s in reversed(item.run.steps) if s.node == node and s.status == "ok"), None)
            if step is None:
                continue
            ins = json.dumps(step.inputs, ensure_ascii=False)[:600]
            outs = json.dumps(step.outputs, ensure_ascii=False)[:400]
            out.append(f"<SAMPLE {i}>\ninput: {ins}\noutput: {outs}\n</SAMPLE {i}>")
        return "\n".join(out)

    def _task_message(
        self, current: CompiledPipeline, forward: Evaluation, metric: Metric, st: Mapping[str, Any]
    ) -> str:
        fails = [s for s in forward.items if s.score < 1.0][: self.max_failures]
        lines = [
            f"- expected {json.dumps(s.example.get(metric.target), ensure_ascii=False)[:120]}, the pipeline "
            f"answered {json.dumps(s.run.outputs.get(metric.output), ensure_ascii=False)[:120]}"
            for s in fails
        ]
        failures = ("Examples it got wrong:\n" + "\n".join(lines)) if lines else "It got every example right."
        goal = current.spec.description or f"the pipeline '{current.name}' answers correctly"
        return "\n" + _prompt(
            "task_objective",
            goal=goal,
            metric=f"{metric.name} on '{metric.output}'",
            score=f"{forward.mean:.2f}",
            failures=failures,
            beta=f"{self.beta(st):.2f}",
        )

    def _contrast(self, forward: Evaluation, node: str, metric: Metric) -> str:
        for item in forward.items:
            if item.score >= 1.0:
                continue
            step = next((s for s in reversed(item.run.steps) if s.node == node and s.status == "ok"), None)
            if step is not None:
                mine = json.dumps(step.outputs, ensure_ascii=False)[:200]
                gold = json.dumps(item.example.get(metric.target), ensure_ascii=False)[:200]
                return (
                    f"\n<CONTRAST>On a failed example this step produced {mine}; the pipeline should have "
                    f"reached the final answer {gold}. Say what output of this step would have led there.</CONTRAST>"
                )
        return ""

    async def _call(self, job: Job, who: str, system: str, user: str, temperature: float) -> str:
        req = LMRequest(
            model=self.optimizer_model,
            messages=chat(system, user),
            temperature=temperature,
            max_tokens=self.max_tokens,
            node=who,
            seed=0 if temperature > 0 else None,
        )
        return (await job.optimizer_lm.complete(req)).text
