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
from typing import Any, ClassVar

from flowc.compile import CompiledPipeline
from flowc.optimizers.scoring import Metric, accept, growth
from flowc.optimizers.skeleton import Run, StepOptimizer, StepReport
from flowc.optimizers.textgrad.graph import GradGraph, Gradient, Var, asks_for_change
from flowc.optimizers.textgrad.prompts import fill
from flowc.runtime.lm import LMClient, LMRequest, chat
from flowc.runtime.trace import StepRecord
from flowc.spec.template import TemplateError, placeholders

START, END = "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"


@dataclass
class TextGrad(StepOptimizer):
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
    validate: apply the validation gate (revert an update that lowers the validation score, or that
        makes the prompts longer without raising it: `scoring.accept`).
    skip_correct: no loss or backward for minibatch examples the pipeline already got right.
    only / frozen / resume / progress: see `StepOptimizer`.
    """

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
    skip_correct: bool = True
    max_tokens: int = 800
    stats: list[dict[str, Any]] = field(default_factory=list)

    name: ClassVar[str] = "textgrad"
    param_kinds: ClassVar[tuple[str, ...]] = ("prompt", "system")

    def projected_calls(self, compiled: CompiledPipeline, n_train: int, n_val: int) -> dict[str, tuple[int, int]]:
        """LM calls (best, worst) of each phase, for --dry-run."""
        from flowc.optimizers.base import trainable_params
        from flowc.optimizers.projection import forward_calls

        best, worst = forward_calls(compiled)
        params = len(trainable_params(compiled, self.only, self.frozen, kinds=self.param_kinds))
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

    # -- the skeleton's hooks ---------------------------------------------------------------------

    def fresh_state(self, run: Run) -> dict[str, Any]:
        return {"history": {p: [] for p in run.params}, "memory": {p: [] for p in run.params}}

    def finished(self, run: Run) -> bool:
        return int(run.state["step"]) >= self.steps

    def max_steps(self) -> int | None:
        return self.steps

    async def step(self, run: Run) -> StepReport:
        st = run.state
        step = run.step
        current = run.current()
        rng = random.Random(run.seed * 100_003 + step)
        batch = run.minibatch(rng, self.batch_size)
        forward = await run.evaluate(current, batch)
        graph = GradGraph(current, run.params)
        skipped = 0
        for i, item in enumerate(forward.items):
            if self.skip_correct and item.score >= 1.0:
                skipped += 1  # full marks: nothing for the backward engine to explain
                continue
            terminal = graph.add_run(i, item.run, run.metric.output)
            if terminal is None:
                continue
            evaluation = await self._loss(run, item.run.outputs, item.example, run.metric, item.score)
            graph.vars[terminal].gradients.append(Gradient(evaluation, "", "the final output", f"loss/ex{i}"))
            await self._backward(run, graph, i, terminal)
        new_values = dict(run.values)
        feedback_sizes = {}
        feedback_texts = {}  # what each update receives as feedback (for the depth benchmark)
        for var in graph.params():
            name = var.id.removeprefix("param:")
            grads = self._select(var.gradients, rng)
            feedback_sizes[name] = sum(len(g.text) for g in grads)
            feedback_texts[name] = [g.text for g in grads]
            if not grads:
                continue
            new = await self._update(run, var, grads, name)
            if new is not None:
                new_values[name] = new
        changed = [p for p in run.params if new_values[p] != run.values[p]]
        grew = growth(run.values, new_values)
        accepted, val = await self._gate(run, new_values)
        st["updates"] += len(run.params)
        for p in run.params:
            fb = graph.vars[f"param:{p}"].gradient_text()
            if new_values[p] != run.values[p]:
                st["history"][p] = (st["history"][p] + [{"value": run.values[p], "feedback": fb}])[-5:]
            if fb:
                st["memory"][p] = (st["memory"][p] + [fb])[-5:]
        if accepted:
            rationale = {p: st["memory"][p][-1] if st["memory"][p] else "" for p in changed}
            run.keep(
                {p: new_values[p] for p in changed},
                val=val,
                candidate=f"step{step}",
                parent=f"step{step - 1}" if step > 1 else "base",
                rationale=rationale,
            )
        if changed:
            run.candidate(
                id=f"step{step}",
                parent=f"step{step - 1}" if step > 1 else "base",
                params={p: new_values[p] for p in changed},
                scores={"train": forward.mean, "val": val},
                accepted=accepted,
                growth=grew,
            )
        run.log(
            event="step",
            batch_train=forward.mean,
            val=val,
            accepted=accepted,
            changed=changed,
            feedback_chars=feedback_sizes,
            feedback=feedback_texts,
            gradients={v.id: len(v.gradients) for v in graph.params()},
            skipped_correct=skipped,
            growth=grew,
        )
        self.stats.append(
            {
                "step": step,
                "feedback_chars": feedback_sizes,
                "feedback": feedback_texts,
                "accepted": accepted,
                "changed": changed,
            }
        )
        return StepReport(train=forward.mean, val=val if changed else None, accepted=accepted if changed else None)

    async def _gate(self, run: Run, new_values: dict[str, Any]) -> tuple[bool, float]:
        if new_values == run.values:
            return False, run.val_best
        candidate = run.pipeline(new_values)  # e.g. a placeholder lost: never accept a pipeline that does not check
        if candidate is None:
            return False, run.val_best
        if not self.validate:
            return True, 0.0
        val = (await run.evaluate(candidate, run.valset)).mean
        return accept(val, run.val_best, growth=growth(run.values, new_values)), val

    # -- loss and backward ------------------------------------------------------------------------

    async def _loss(
        self, run: Run, outputs: Mapping[str, Any], example: Mapping[str, Any], metric: Metric, score: float
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
            run,
            "textgrad:loss",
            None,
            (
                f"Evaluate a prediction against the ground truth. {verdict}\n"
                "Criticize the prediction: what is wrong or missing? Do not solve the task again."
            ),
        )
        return f"{verdict}\n{text}"

    async def _backward(self, run: Run, graph: GradGraph, example: int, terminal: str) -> None:
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
                if var.links.get(pid) == "route":  # the router's decision to run this step
                    router = graph.compiled.graph.node(pred.node or "")
                    prompt = fill(
                        "backward_route",
                        role=pred.role,
                        choices=", ".join(router.route.choices) if router.route else "(unknown)",
                        conversation=conversation,
                        downstream=downstream,
                        variable=pred.value,
                        max_words=self.max_words,
                    )
                elif is_loss:
                    prompt = fill(
                        "backward_base",
                        role=pred.role,
                        conversation=conversation,
                        evaluation=downstream,
                        output_role=var.role,
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
                text = await self._call(run, f"textgrad:backward:{pid}", fill("backward_system"), prompt)
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
            if asks_for_change(g.text) and all(g.text.strip() != u.text.strip() for u in unique):
                unique.append(g)
        if len(unique) <= self.max_gradients:
            return unique
        return sorted(rng.sample(unique, self.max_gradients), key=unique.index)

    # -- TGD ----------------------------------------------------------------------------------------

    async def _update(self, run: Run, var: Var, grads: list[Gradient], name: str) -> str | None:
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
        st = run.state
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
        reply = await self._call(run, f"textgrad:update:{name}", system, user)
        new = _between_tags(reply)
        if new is None:  # Q5: ask once for the format instead of failing
            reply = await self._call(
                run,
                f"textgrad:update:{name}",
                system,
                user + f"\n\nYour last reply had no {START}...{END} tags. Reply again, "
                f"with the whole improved variable between {START} and {END}.",
            )
            new = _between_tags(reply)
        if new is None or not new.strip():
            run.log(event="update-unreadable", param=name, reply=reply[:300])
            return None
        lost = _lost_placeholders(keep, new)
        if lost:  # the pipeline still compiles without an input's placeholder, but the node goes blind to it
            run.log(event="rejected", param=name, reason=f"dropped placeholders {lost}", after=new)
            return None
        run.log(
            event="update",
            param=name,
            before=var.value,
            after=new,
            gradients=[g.source for g in grads],
        )
        return new

    async def _call(self, run: Run, who: str, system: str | None, user: str) -> str:
        req = LMRequest(
            model=self.optimizer_model,
            messages=chat(system, user),
            temperature=0.0,
            max_tokens=self.max_tokens,
            node=who,
        )
        return (await run.job.optimizer_lm.complete(req)).text


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
