"""TextGrad-style optimization (ALGORITHMS.md §1): textual gradients propagated backward over the
pipeline's IR, and textual gradient descent (TGD) on its trainable prompts.

One step:
1. run the pipeline on a minibatch (the forward pass; traces give every call's input and output);
2. the loss of each example is an evaluation text: the metric's verdict with the expected answer
   (TextGrad's string-based loss), or an LLM judge's critique (`loss="judge"`);
3. backward, per example, in reverse topological order: for each step with feedback, one backward
   call per predecessor that requires a gradient — the node's prompt (a param) and the upstream
   step outputs it read — using the base prompt when the step's output is the one evaluated, and
   the chain prompt (with the downstream feedback) otherwise; retrieval and tool steps are shown as
   functions. Summing the batch's losses means each example's feedback reaches every param it
   touched (TextGrad's `tg.sum`), with no aggregate call;
4. TGD: one call per param with feedback — the variable shown whole, its feedback in context,
   momentum (past values and their feedback), gradient memory, constraints (the template's
   placeholders are always kept), in-context examples — reading the new value between tags, with
   one repair request when the tags are missing;
5. the validation gate: keep the update only if the validation score does not drop (else revert).

Defects of the reference release fixed here (§1.7): whitespace-only feedback counts as none and
duplicates are merged (Q1); the variable is shown whole, not as its first and last ten words (Q2);
momentum and gradient memory are actually rendered (Q4); a reply without tags gets one repair
request instead of an IndexError (Q5); and feedback is capped in length and number per update, with
provenance kept for what was dropped (Q6).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.errors import FlowcError, SpecErrors
from flowc.optimizers.base import AsyncOptimizer, ParamPatch, Provenance, trainable_params
from flowc.optimizers.budget import Budget, BudgetExceeded
from flowc.optimizers.job import Job
from flowc.optimizers.scoring import Metric, accept
from flowc.optimizers.textgrad.graph import GradGraph, Gradient, Var
from flowc.optimizers.textgrad.prompts import fill
from flowc.runtime.lm import LMClient, LMRequest, chat
from flowc.runtime.trace import StepRecord
from flowc.spec.template import TemplateError, placeholders

START, END = "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"


@dataclass
class TextGrad(AsyncOptimizer):
    """Args:
    pipeline_lm: the client the pipeline's nodes call (the forward engine).
    optimizer_lm: the client for feedback and updates (the backward engine and TGD).
    optimizer_model: the litellm model id the optimizer's requests name.
    steps: optimization steps (iterations). batch_size: examples per minibatch.
    loss: "metric" (the metric's verdict and the expected answer) or "judge" (an LLM critique).
    max_feedback_chars: cap on one piece of feedback (None: uncapped, as in the release).
    max_gradients: cap on feedback pieces per param per update (sampled, seeded).
    momentum_window: past values (with their feedback) shown in an update; 0 turns it off.
    gradient_memory: past feedback texts shown in an update; 0 turns it off.
    constraints / examples: natural-language constraints and in-context examples for updates.
    validate: apply the validation gate (revert an update that lowers the validation score).
    """

    pipeline_lm: LMClient
    optimizer_lm: LMClient
    optimizer_model: str
    steps: int = 12
    batch_size: int = 3
    loss: str = "metric"
    max_feedback_chars: int | None = 1500
    max_gradients: int = 6
    max_words: int = 120
    momentum_window: int = 2
    gradient_memory: int = 2
    constraints: Sequence[str] = ()
    examples: Sequence[str] = ()
    validate: bool = True
    only: Sequence[str] | None = None
    frozen: Sequence[str] = ()
    resume: bool = False
    max_tokens: int = 800
    stats: list[dict[str, Any]] = field(default_factory=list)

    name: ClassVar[str] = "textgrad"

    def settings(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "loss": self.loss,
            "max_feedback_chars": self.max_feedback_chars,
            "max_gradients": self.max_gradients,
            "momentum_window": self.momentum_window,
            "gradient_memory": self.gradient_memory,
            "constraints": list(self.constraints),
            "examples": list(self.examples),
            "validate": self.validate,
            "only": list(self.only or []),
            "frozen": list(self.frozen),
            "model": self.optimizer_model,
        }

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        """LM calls (best, worst) of each phase, for --dry-run."""
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        params = len(trainable_params(compiled, self.only, self.frozen, kinds=("prompt", "system")))
        b = min(self.batch_size, n_train)
        # backward: per example, one call per edge into a variable that needs feedback: at most the
        # node's prompt and one upstream output per LLM call (plus the judge when loss="judge").
        backward = b * (2 * worst + (1 if self.loss == "judge" else 0))
        per_step_val = n_val * worst if self.validate else 0
        return {
            "validation baseline": (n_val * best if self.validate else 0, per_step_val),
            "forward (minibatches)": (self.steps * b * best, self.steps * b * worst),
            "backward (feedback)": (0, self.steps * backward),
            "updates (TGD, with one repair)": (0, self.steps * params * 2),
            "validation gate": (0, self.steps * per_step_val),
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
        params = trainable_params(compiled, self.only, self.frozen, kinds=("prompt", "system"))
        if not params:
            raise FlowcError(
                "invalid-value",
                f"pipeline '{compiled.name}' has no trainable prompt to optimize",
                hint="mark an llm node 'trainable: true', or check --only/--freeze",
            )
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
            "values": {p: compiled.params[p].value for p in params},
            "val_base": None,
            "val_best": None,
            "history": {p: [] for p in params},
            "memory": {p: [] for p in params},
            "updates": 0,
            "effective": 0,
        }
        stopped = None
        try:
            if st["val_base"] is None:
                st["val_base"] = st["val_best"] = (
                    (await job.scorer.evaluate(compiled, valset, metric)).mean if self.validate else 0.0
                )
                job.checkpoint(st["step"], st)
            while st["step"] < self.steps:
                await self._one_step(job, compiled, params, st, trainset, valset, metric, seed)
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
                rationale=(st["memory"][p][-1] if st["memory"][p] else "")[:500],
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
                "effective_updates": st["effective"],
            },
            budget_used=job.meter.used(),
            stopped_by=stopped,
        )

    # -- one step -----------------------------------------------------------------------------------

    async def _one_step(
        self,
        job: Job,
        base: CompiledPipeline,
        params: list[str],
        st: dict[str, Any],
        trainset: Sequence[Mapping[str, Any]],
        valset: Sequence[Mapping[str, Any]],
        metric: Metric,
        seed: int,
    ) -> None:
        step = st["step"] + 1
        current = base.with_params(st["values"])
        rng = random.Random(seed * 100_003 + step)
        batch = [trainset[i] for i in rng.sample(range(len(trainset)), min(self.batch_size, len(trainset)))]
        forward = await job.scorer.evaluate(current, batch, metric)
        graph = GradGraph(current, params)
        for i, item in enumerate(forward.items):
            terminal = graph.add_run(i, item.run, metric.output)
            if terminal is None:
                continue
            evaluation = await self._loss(job, item.run.outputs, item.example, metric, item.score)
            graph.vars[terminal].gradients.append(Gradient(evaluation, "", "the final output", f"loss/ex{i}"))
            await self._backward(job, graph, i, terminal)
        new_values = dict(st["values"])
        feedback_sizes = {}
        for var in graph.params():
            name = var.id.removeprefix("param:")
            grads = self._select(var.gradients, rng)
            feedback_sizes[name] = sum(len(g.text) for g in grads)
            if not grads:
                continue
            new = await self._update(job, var, grads, st, name)
            if new is not None:
                new_values[name] = new
        accepted, val = await self._gate(job, base, st, new_values, valset, metric)
        changed = [p for p in params if new_values[p] != st["values"][p]]
        st["updates"] += len(params)
        if accepted and changed:
            st["effective"] += len(changed)
        for p in params:
            if new_values[p] != st["values"][p]:
                st["history"][p] = (
                    st["history"][p]
                    + [{"value": st["values"][p], "feedback": graph.vars[f"param:{p}"].gradient_text()}]
                )[-5:]
            fb = graph.vars[f"param:{p}"].gradient_text()
            if fb:
                st["memory"][p] = (st["memory"][p] + [fb])[-5:]
        if accepted:
            st["values"] = new_values
            st["val_best"] = val
        job.candidate(
            step=step,
            id=f"step{step}",
            parent=f"step{step - 1}" if step > 1 else "base",
            params={p: new_values[p] for p in changed},
            scores={"train": forward.mean, "val": val},
            accepted=accepted,
        )
        job.log(
            step=step,
            event="step",
            batch_train=forward.mean,
            val=val,
            accepted=accepted,
            changed=changed,
            feedback_chars=feedback_sizes,
            gradients={v.id: len(v.gradients) for v in graph.params()},
        )
        self.stats.append({"step": step, "feedback_chars": feedback_sizes, "accepted": accepted, "changed": changed})

    async def _gate(
        self,
        job: Job,
        base: CompiledPipeline,
        st: dict[str, Any],
        new_values: dict[str, Any],
        valset: Sequence[Mapping[str, Any]],
        metric: Metric,
    ) -> tuple[bool, float]:
        if new_values == st["values"]:
            return False, float(st["val_best"] or 0.0)
        try:
            candidate = base.with_params(new_values)
        except SpecErrors as e:  # e.g. a placeholder lost: never accept a pipeline that does not check
            job.log(step=st["step"] + 1, event="rejected", reason=e.render()[:500])
            return False, float(st["val_best"] or 0.0)
        if not self.validate:
            return True, 0.0
        val = (await job.scorer.evaluate(candidate, valset, metric)).mean
        return accept(val, float(st["val_best"] or 0.0)), val

    # -- loss and backward ------------------------------------------------------------------------

    async def _loss(
        self, job: Job, outputs: Mapping[str, Any], example: Mapping[str, Any], metric: Metric, score: float
    ) -> str:
        pred = outputs.get(metric.output)
        gold = example.get(metric.target)
        verdict = (
            f"The pipeline's {metric.output} was {json.dumps(pred, ensure_ascii=False)}; the expected "
            f"{metric.output} is {json.dumps(gold, ensure_ascii=False)}. {metric.name} = {score:g} "
            f"({'correct' if score >= 1 else 'wrong' if score <= 0 else 'partly correct'})."
        )
        if self.loss != "judge":
            return verdict
        text = await self._call(
            job,
            "textgrad:loss",
            None,
            (
                f"Evaluate a prediction against the ground truth. {verdict}\n"
                "Criticize the prediction: what is wrong or missing? Do not solve the task again."
            ),
        )
        return f"{verdict}\n{text}"

    async def _backward(self, job: Job, graph: GradGraph, example: int, terminal: str) -> None:
        for var in graph.backward_order(example):
            feedback = var.gradient_text()
            if not var.requires_grad or not feedback or var.step is None:
                continue
            is_loss = var.id == terminal and all(g.source.startswith("loss/") for g in var.gradients)
            conversation = self._conversation(var.step)
            for pid in var.preds:
                pred = graph.vars[pid]
                if not pred.requires_grad:
                    continue
                downstream = self._cap(feedback)
                if is_loss:
                    prompt = fill(
                        "backward_base",
                        role=pred.role,
                        conversation=conversation,
                        evaluation=downstream,
                        objective=f"a correct {var.role}",
                        variable=pred.value,
                        max_words=self.max_words,
                    )
                else:
                    ex = "".join(f"<EXAMPLES>{e}</EXAMPLES>\n" for e in self.examples)
                    prompt = fill(
                        "backward_chain",
                        role=pred.role,
                        conversation=conversation,
                        output_role=var.role,
                        downstream=downstream,
                        examples=ex,
                        variable=pred.value,
                        max_words=self.max_words,
                    )
                text = await self._call(job, f"textgrad:backward:{pid}", fill("backward_system"), prompt)
                pred.gradients.append(Gradient(self._cap(text), conversation, var.role, f"{var.id} -> {pid}"))

    def _conversation(self, step: StepRecord) -> str:
        if step.lm_calls:
            call = step.lm_calls[-1]
            msgs = call.request.get("messages", [])
            system = "\n".join(m["content"] for m in msgs if m["role"] == "system")
            user = "\n".join(m["content"] for m in msgs if m["role"] != "system")
            return fill("conversation", system=system or "(none)", input=user, output=call.response or "")
        inputs = json.dumps(step.inputs, ensure_ascii=False)[:2000]
        return fill(
            "function_view",
            purpose=f"a {step.kind} step '{step.node}'",
            inputs=inputs,
            output=json.dumps(step.outputs, ensure_ascii=False)[:2000],
        )

    def _cap(self, text: str) -> str:
        if self.max_feedback_chars is None or len(text) <= self.max_feedback_chars:
            return text
        half = self.max_feedback_chars // 2
        return text[:half] + " (...) " + text[-half:]

    def _select(self, grads: list[Gradient], rng: random.Random) -> list[Gradient]:
        unique: list[Gradient] = []
        for g in grads:
            if g.text.strip() and all(g.text.strip() != u.text.strip() for u in unique):
                unique.append(g)
        if len(unique) <= self.max_gradients:
            return unique
        return sorted(rng.sample(unique, self.max_gradients), key=unique.index)

    # -- TGD ----------------------------------------------------------------------------------------

    async def _update(self, job: Job, var: Var, grads: list[Gradient], st: dict[str, Any], name: str) -> str | None:
        items = "\n".join(
            fill(
                "feedback_item",
                conversation=g.conversation or "(the evaluation)",
                output_role=g.output_role,
                role=var.role,
                feedback=g.text,
            )
            for g in grads
        )
        momentum = ""
        if self.momentum_window and st["history"][name]:
            past = st["history"][name][-self.momentum_window :]
            lines = "\n".join(
                f"{var.role} at an earlier step: {h['value']}\nFeedback then: {h['feedback'][:600]}" for h in past
            )
            momentum = (
                f"\n<PAST_ITERATIONS>\n{lines}\n</PAST_ITERATIONS>\nIf the feedback repeats across steps, "
                "the earlier edits were too small: make a more significant change.\n"
            )
        memory = ""
        if self.gradient_memory and st["memory"][name]:
            past_fb = st["memory"][name][-self.gradient_memory :]
            memory = (
                "\n"
                + "\n".join(f"<FEEDBACK-{i}> {f[:600]} </FEEDBACK-{i}>" for i, f in enumerate(past_fb, 1))
                + "\nAbove is feedback from earlier steps; keep what it taught.\n"
            )
        keep = sorted({p.name for p in placeholders(var.value)}) if isinstance(var.value, str) else []
        cons = list(self.constraints)
        if keep:
            cons.append("Keep every placeholder exactly as written: " + ", ".join("{{" + k + "}}" for k in keep))
        constraints = (
            (
                "\n<CONSTRAINTS>\n"
                + "\n".join(f"Constraint {i}: {c}" for i, c in enumerate(cons, 1))
                + "\n</CONSTRAINTS>\nYou must follow the constraints.\n"
            )
            if cons
            else ""
        )
        examples = (
            ("\n<EXAMPLES>\n" + "\n".join(self.examples) + "\n</EXAMPLES>\nBase your change on these examples.\n")
            if self.examples
            else ""
        )
        system = fill("optimizer_system", start=START, end=END)
        user = fill(
            "optimizer_user",
            role=var.role,
            variable=var.value,
            feedback=items,
            momentum=momentum,
            memory=memory,
            constraints=constraints,
            examples=examples,
            start=START,
            end=END,
        )
        reply = await self._call(job, f"textgrad:update:{name}", system, user)
        new = _between_tags(reply)
        if new is None:  # Q5: ask once for the format instead of failing
            reply = await self._call(
                job,
                f"textgrad:update:{name}",
                system,
                user + f"\n\nYour last reply had no {START}...{END} tags. Reply again, "
                f"with the whole improved variable between {START} and {END}.",
            )
            new = _between_tags(reply)
        if new is None or not new.strip():
            job.log(step=st["step"] + 1, event="update-unreadable", param=name, reply=reply[:300])
            return None
        lost = _lost_placeholders(keep, new)
        if lost:  # the pipeline still compiles without an input's placeholder, but the node goes blind to it
            job.log(step=st["step"] + 1, event="rejected", param=name, reason=f"dropped placeholders {lost}", after=new)
            return None
        job.log(
            step=st["step"] + 1,
            event="update",
            param=name,
            before=var.value,
            after=new,
            gradients=[g.source for g in grads],
        )
        return new

    async def _call(self, job: Job, who: str, system: str | None, user: str) -> str:
        req = LMRequest(
            model=self.optimizer_model,
            messages=chat(system, user),
            temperature=0.0,
            max_tokens=self.max_tokens,
            node=who,
        )
        return (await job.optimizer_lm.complete(req)).text


def _between_tags(text: str) -> str | None:
    m = re.search(re.escape(START) + r"(.*?)" + re.escape(END), text, re.S)
    if m:
        return m.group(1).strip("\n")
    return None


def _lost_placeholders(keep: list[str], new: str) -> list[str]:
    """Placeholders of the old value missing from the new one (all of them if it does not parse)."""
    try:
        have = {p.name for p in placeholders(new)}
    except TemplateError:
        return keep or ["(malformed template)"]
    return [k for k in keep if k not in have]
