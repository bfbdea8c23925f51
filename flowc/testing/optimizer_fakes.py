"""Deterministic fake models for testing optimizers (flowc's and users'): the pipeline's model, the
optimizer's critic and rewriter, a kill switch that interrupts a job after k calls, and the tiny QA
pipeline `OptimizerContract` runs on by default.

Every fake is a function of the request text only, so two runs that send the same requests get the
same answers (what "same seed, same patch" and "resume is equivalent" need), and a fresh fake
"continues where the journal stops" by construction.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from flowc.runtime.fakes import count_tokens
from flowc.runtime.lm import LMClient, LMRequest, LMResponse

Answer = Callable[[LMRequest], str]


def request_text(request: LMRequest) -> str:
    """Every message of a request, joined (what the fakes read)."""
    return "\n".join(m.content for m in request.messages)


def system_text(request: LMRequest) -> str:
    return "\n".join(m.content for m in request.messages if m.role == "system")


def between(text: str, start: str, end: str) -> str | None:
    """The text between the first `start` and the next `end` (stripped of newlines), or None."""
    m = re.search(re.escape(start) + r"(.*?)" + re.escape(end), text, re.S)
    return m.group(1).strip("\n") if m else None


class FunctionLM:
    """An LMClient answering `answer(request)`; records requests in `.calls`.

    Unlike `ScriptedLM` it never runs out, which suits optimizers whose number of calls a test does
    not want to spell out. Tokens are counted like the other fakes (one per whitespace word).
    """

    def __init__(self, answer: Answer, *, model: str | None = None) -> None:
        self.answer = answer
        self.model = model
        self.calls: list[LMRequest] = []
        self.responses: list[LMResponse] = []

    @property
    def tokens(self) -> int:
        """Tokens of every answered call."""
        return sum(r.total_tokens for r in self.responses)

    async def complete(self, request: LMRequest) -> LMResponse:
        self.calls.append(request)
        text = self.answer(request)
        response = LMResponse(
            text=text,
            model=self.model or request.model,
            prompt_tokens=sum(count_tokens(m.content) for m in request.messages),
            completion_tokens=count_tokens(text),
            finish_reason="stop",
        )
        self.responses.append(response)
        return response


class SimulatedKill(BaseException):
    """Raised by `KillSwitch` to stand for a killed process: a BaseException, so no `except
    Exception` (and no budget handler) in an optimizer can swallow it."""


class KillSwitch:
    """Interrupts a job after `after` answered calls, counted across every client it wraps.

    kill = KillSwitch(after=5)
    opt = make_optimizer(kill.wrap(pipeline_lm), kill.wrap(optimizer_lm))
    with pytest.raises(SimulatedKill): opt.optimize(...)
    """

    def __init__(self, after: int) -> None:
        self.after = after
        self.answered = 0

    def wrap(self, inner: LMClient) -> LMClient:
        return _Killable(inner, self)


class _Killable:
    def __init__(self, inner: LMClient, switch: KillSwitch) -> None:
        self.inner = inner
        self.switch = switch

    async def complete(self, request: LMRequest) -> LMResponse:
        if self.switch.answered >= self.switch.after:
            raise SimulatedKill(f"killed after {self.switch.answered} calls")
        response = await self.inner.complete(request)
        self.switch.answered += 1
        return response


# -- the default pipeline of the conformance suite ---------------------------------------------------

QA_SPEC = """pipeline qa {
  input question: str
  output answer: str <- answer.answer
  model m = "fake/model"
  node draft: llm {
    prompt: "Think about: {{question}}"
    question <- question
    output notes: str
  }
  node answer: llm {
    prompt: "Notes: {{notes}} Q: {{question}}"
    question <- question
    notes <- draft.notes
    output answer: str
  }
  metric em: exact_match(output = answer, target = answer)
}
"""

#: Training examples: the ones that say "capital" are answered right by `qa_pipeline_answer`.
QA_TRAIN: tuple[dict[str, str], ...] = (
    {"question": "What is the capital of France?", "answer": "Paris"},
    {"question": "Where is the Louvre?", "answer": "Paris"},
    {"question": "Which French city is the capital?", "answer": "Paris"},
    {"question": "Which city has the Eiffel Tower?", "answer": "Paris"},
    {"question": "Name the capital of France.", "answer": "Paris"},
    {"question": "Where does the French president live?", "answer": "Paris"},
)
#: Validation examples: none says "capital", so the base prompts score 0 on them.
QA_VAL: tuple[dict[str, str], ...] = (
    {"question": "Where is Notre-Dame?", "answer": "Paris"},
    {"question": "Which city hosts Roland-Garros?", "answer": "Paris"},
)

#: The sentence the fake rewriter adds to a prompt; with it, the fake pipeline answers right.
HINT = "Name the capital city."


def qa_pipeline_answer(request: LMRequest) -> str:
    """The fake pipeline model of `QA_SPEC`: the draft step echoes the question as notes; the
    answer step says "Paris" when its request mentions a capital (in the prompt, a demo or the
    notes) and "dunno" otherwise."""
    text = request_text(request)
    if "Think about:" in text and "Notes:" not in text:
        return "notes: " + text.rsplit("Think about:", 1)[1].strip()[:80]
    return "Paris" if "capital" in text.lower() else "dunno"


def fake_optimizer_answer(request: LMRequest, *, hint: str = HINT) -> str:
    """A fake critic and rewriter that understands the request shapes of flowc's optimizers:

    - a TextGrad update (system prompt names `<IMPROVED_VARIABLE>`): the variable (read from
      `<VARIABLE>`) with `hint` put in front, between the tags;
    - a TEP-style update (asks for `<PROMPT>...</PROMPT>`): the prompt in `<CURRENT>` with `hint`;
    - a critic that wants JSON scores (the reply format names "scores"): one suggestion, or, when the
      prompt under review (in `<PROMPT>`) already holds `hint`, none and `no_further_improvement`
      (the equilibrium a TEP critic reports once its advice is in);
    - anything else (feedback, a judge): one fixed sentence of feedback.
    """
    system, text = system_text(request), request_text(request)
    if "<IMPROVED_VARIABLE>" in system:
        var = between(text, "<VARIABLE>", "</VARIABLE>") or ""
        return f"<IMPROVED_VARIABLE>{hint} {var.strip()}</IMPROVED_VARIABLE>"
    if "<PROMPT>" in system and "<CURRENT>" in text:
        cur = between(text, "<CURRENT>", "</CURRENT>") or ""
        return f"<PROMPT>{hint} {cur.strip()}</PROMPT>"
    if '"scores"' in system:
        if hint in (between(text, "<PROMPT>", "</PROMPT>") or ""):
            return json.dumps({"scores": {}, "suggestions": [], "no_further_improvement": True})
        return json.dumps({"scores": {}, "suggestions": [f"Add: {hint}"], "no_further_improvement": False})
    return f"The answer should be a city. Add the instruction: {hint}"


def hurting_pipeline_answer(
    base_keys: set[str],
    val_inputs: Sequence[Mapping[str, Any]],
    good: Answer,
    bad: str = "wrong",
    *,
    others: Answer | None = None,
) -> Answer:
    """A pipeline model under which every change to the pipeline lowers the validation score:
    requests the unpatched pipeline sends for a validation example (`base_keys`) get `good`'s
    answer, any other request about a validation example gets `bad`, everything else `others`'s
    answer (default `good`; the suite passes its pipeline model, which gets some training examples
    wrong, so that a method that learns only from failures has something to change)."""
    needles = [str(v) for ex in val_inputs for v in ex.values() if isinstance(v, str) and v]

    def answer(request: LMRequest) -> str:
        if request.key() in base_keys:
            return good(request)
        text = request_text(request)
        if any(n in text for n in needles):
            return bad
        return (others or good)(request)

    return answer


def always_right(gold: str = "Paris") -> Answer:
    """A pipeline model that is always right on `QA_SPEC` (notes for the draft, gold for the answer)."""

    def answer(request: LMRequest) -> str:
        text = request_text(request)
        if "Think about:" in text and "Notes:" not in text:
            return "notes"
        return gold

    return answer


class GrowingCritic:
    """A deterministic stand-in for a verbose critic, for depth measurements (`benchmarks/bench_depth.py`).

    Feedback (a TextGrad backward request):
    - on the evaluated output (the base prompt, with `<EVALUATION>`): "No change needed." when the
      evaluation says "(correct)"; otherwise its own critique, one fixed sentence of `own_words`
      words starting with "Critique:";
    - upstream (a chain prompt): "No change needed." when the downstream feedback (the text in
      `<OBJECTIVE_FUNCTION>` after "feedback on the output:") holds no critique; otherwise its own
      critique followed by the first `share` of the downstream feedback's characters, verbatim.
      share=1.0 echoes all of it, so the feedback reaching node i of a chain holds one critique per
      node below it and grows linearly with depth unless the optimizer caps it; share<1 is a critic
      that summarizes (the length converges to about own/(1-share)).
    Updates (a request whose system prompt names `<IMPROVED_VARIABLE>` or `<PROMPT>`): the variable
    unchanged when its feedback (in `<CONTEXT>`) holds no critique, else `hint` put in front of it.
    A critic asked for JSON scores gets `fake_optimizer_answer`'s reply. Tokens: one per word.
    """

    def __init__(self, share: float = 1.0, own_words: int = 20, hint: str = HINT) -> None:
        self.share = share
        self.own = " ".join(["Critique:", *(f"w{i}" for i in range(own_words - 1))])
        self.hint = hint

    def __call__(self, request: LMRequest) -> str:
        system, text = system_text(request), request_text(request)
        if "<IMPROVED_VARIABLE>" in system:
            context = between(text, "<CONTEXT>", "</CONTEXT>") or ""
            if "Critique:" not in context:
                var = between(text, "<VARIABLE>", "</VARIABLE>") or ""
                return f"<IMPROVED_VARIABLE>{var.strip()}</IMPROVED_VARIABLE>"
            return fake_optimizer_answer(request, hint=self.hint)
        if "<PROMPT>" in system or '"scores"' in system:
            return fake_optimizer_answer(request, hint=self.hint)
        if "<EVALUATION>" in text:
            return self.own if "(correct)" not in text else "No change needed."
        objective = between(text, "<OBJECTIVE_FUNCTION>", "</OBJECTIVE_FUNCTION>") or ""
        down = objective.split("feedback on the output:", 1)[-1].strip()
        if "Critique:" not in down:
            return "No change needed."
        return f"{self.own} {down[: int(len(down) * self.share)]}".strip()


#: Capitals the fake chain model knows (questions "What is the capital of X?").
CAPITALS: dict[str, str] = {
    "France": "Paris",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Germany": "Berlin",
    "Japan": "Tokyo",
    "Egypt": "Cairo",
    "Peru": "Lima",
    "Kenya": "Nairobi",
    "Norway": "Oslo",
    "Chile": "Santiago",
}


def capital_questions() -> list[dict[str, str]]:
    return [{"question": f"What is the capital of {c}?", "answer": a} for c, a in CAPITALS.items()]


def chain_pipeline_answer(request: LMRequest, *, hint: str = HINT) -> str:
    """The fake model of `flowc.testing.generators.deep_chain`: the drafter answers "I think it is
    <capital>." (wrong under exact match), or the bare capital when its prompt holds `hint`; a
    refiner repeats the current answer, or gives the bare capital when its prompt holds `hint`."""
    text = request_text(request)
    country = next((c for c in CAPITALS if c in text), None)
    capital = CAPITALS.get(country or "", "unknown")
    if hint in text:
        return capital
    current = between(text, "Current answer:", "\n\n")
    if current is not None:
        return current.strip()
    return f"I think it is {capital}."


__all__ = (
    "CAPITALS",
    "HINT",
    "QA_SPEC",
    "QA_TRAIN",
    "QA_VAL",
    "FunctionLM",
    "GrowingCritic",
    "KillSwitch",
    "SimulatedKill",
    "always_right",
    "between",
    "capital_questions",
    "chain_pipeline_answer",
    "fake_optimizer_answer",
    "hurting_pipeline_answer",
    "qa_pipeline_answer",
    "request_text",
)
