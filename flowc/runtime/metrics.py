"""The metrics every flowc evaluation and optimizer shares (ALGORITHMS.md §8), in one place.

Answer metrics take `(prediction, gold)` where gold is one string or a list of acceptable strings;
the score is the best over the golds. Text is compared after SQuAD normalisation: lowercase, remove
punctuation, remove the articles a/an/the, collapse whitespace.

- `exact_match`: normalised prediction equals a normalised gold.
- `token_f1`: SQuAD token-overlap F1. As in HotpotQA's official script, when either side
  normalises to yes/no/noanswer and the two differ, F1 is 0 (a yes/no answer is right or wrong).
- `accuracy`: a normalised gold is a *substring* of the normalised prediction, the "Acc" of JADE
  and Agent-UniRAG ("the prediction contains the gold"). It is lenient by design: gold "1" is
  found in "1990".
- `contains`: a stricter containment: the gold's tokens appear as a contiguous run of the
  prediction's tokens (so "1" is not found in "1990").
- `last_integer`: the last number in the prediction equals the gold's number (BBH object counting,
  GSM8K; TextGrad's string-based equality). Numbers may carry thousands separators and decimals;
  a GSM8K gold solution's final "#### 18" is understood.
- `label_accuracy`: the first of yes/no/maybe in the prediction equals the gold label (PubMedQA).

Retrieval metrics take `(retrieved, gold)`: what a retriever returned, best first, and the relevant
key or keys. A retrieved item is a key (str), or a document (a dict with `id`/`title`, as a retrieve
node outputs, or an object with those attributes, or a `Hit`): a document matches a gold key by its
id or by its title, so gold titles work on corpora whose ids are positions. `hit@k` is 1 if any
relevant key is in the top k, `recall@k` the fraction of relevant keys in the top k, `mrr` the
reciprocal rank of the first relevant item.

`METRICS` maps each name to a `Metric`; `get_metric` also understands `hit@k` / `recall@k` for any k.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from flowc.errors import FlowcError

__all__ = [
    "METRICS",
    "Metric",
    "accuracy",
    "contains",
    "exact_match",
    "extract_label",
    "get_metric",
    "hit_at_k",
    "label_accuracy",
    "last_integer",
    "last_number",
    "mrr",
    "normalize_answer",
    "recall_at_k",
    "token_f1",
]

Gold = str | Sequence[str]
MetricKind = Literal["answer", "label", "retrieval"]

_PUNCT = str.maketrans("", "", string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_YES_NO = frozenset({"yes", "no", "noanswer"})
# A number: a sign only where "-" does not join two words ("1990-2000" is two numbers), digits with
# well-formed thousands separators ("1,234"; "1,2,3" is three numbers), optional decimals.
_NUMBER = re.compile(r"(?:(?<![\w-])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")
PUBMEDQA_LABELS = ("yes", "no", "maybe")


def normalize_answer(text: object) -> str:
    """SQuAD normalisation: lowercase, drop punctuation, drop a/an/the, collapse whitespace."""
    s = _as_text(text).lower().translate(_PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match(prediction: object, gold: Gold) -> float:
    """1.0 if the normalised prediction equals a normalised gold, else 0.0."""
    p = normalize_answer(prediction)
    return max((float(p == normalize_answer(g)) for g in _golds(gold)), default=0.0)


def token_f1(prediction: object, gold: Gold) -> float:
    """SQuAD token F1 (best over golds); yes/no/noanswer must match exactly (HotpotQA's rule)."""
    return max((_f1(normalize_answer(prediction), normalize_answer(g)) for g in _golds(gold)), default=0.0)


def _f1(pred: str, gold: str) -> float:
    if (pred in _YES_NO or gold in _YES_NO) and pred != gold:
        return 0.0
    p, g = pred.split(), gold.split()
    if not p or not g:
        # Both empty is a match; one empty is not.
        return float(p == g)
    common = sum((Counter(p) & Counter(g)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def accuracy(prediction: object, gold: Gold) -> float:
    """1.0 if a normalised gold is a substring of the normalised prediction (JADE / Agent-UniRAG Acc).

    An empty normalised gold (e.g. gold "the") only matches an empty prediction; otherwise every
    prediction would contain it.
    """
    p = normalize_answer(prediction)
    return max((float(g in p if g else p == g) for g in map(normalize_answer, _golds(gold))), default=0.0)


def contains(prediction: object, gold: Gold) -> float:
    """1.0 if a gold's normalised tokens occur as a contiguous run in the prediction's."""
    p = normalize_answer(prediction).split()
    best = 0.0
    for g in _golds(gold):
        gt = normalize_answer(g).split()
        if not gt:
            hit = not p
        else:
            hit = any(p[i : i + len(gt)] == gt for i in range(len(p) - len(gt) + 1))
        best = max(best, float(hit))
    return best


def last_number(text: object) -> Decimal | None:
    """The last number in a text ("1,234.5" → 1234.5), or None if there is none.

    In a GSM8K solution the number right after the final "####" is the answer, wherever it is.
    """
    s = _as_text(text)
    marked = "####" in s
    found = _NUMBER.findall(s.rsplit("####", 1)[1] if marked else s)
    if not found:
        return None
    try:
        return Decimal((found[0] if marked else found[-1]).replace(",", ""))
    except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
        return None


def last_integer(prediction: object, gold: object) -> float:
    """1.0 if the prediction's last number equals the gold's number (so "5.0" equals "5").

    This is TextGrad's string-based equality for BBH object counting and GSM8K, with one
    difference: TextGrad truncates "5.5" to 5, here 5.5 is not 5. A prediction without a number
    scores 0.
    """
    golds = _golds(gold) if not isinstance(gold, int | float | Decimal) else [str(gold)]
    p = last_number(prediction)
    if p is None:
        return 0.0
    return max((float(p == g) for g in map(last_number, golds) if g is not None), default=0.0)


def extract_label(prediction: object, labels: Sequence[str] = PUBMEDQA_LABELS) -> str | None:
    """The first word of the normalised prediction that is one of `labels`, or None."""
    allowed = {lab.lower() for lab in labels}
    return next((w for w in normalize_answer(prediction).split() if w in allowed), None)


def label_accuracy(prediction: object, gold: Gold) -> float:
    """1.0 if the first yes/no/maybe in the prediction is the gold label (PubMedQA)."""
    label = extract_label(prediction)
    return max((float(label == normalize_answer(g)) for g in _golds(gold)), default=0.0)


def hit_at_k(retrieved: Sequence[object], gold: Gold, k: int) -> float:
    """1.0 if any relevant key is among the first k retrieved."""
    top: set[str] = set().union(*_keys(retrieved)[:k])
    return float(any(g in top for g in _golds(gold)))


def recall_at_k(retrieved: Sequence[object], gold: Gold, k: int) -> float:
    """The fraction of distinct relevant keys among the first k retrieved (0.0 when there are none)."""
    relevant = set(_golds(gold))
    if not relevant:
        return 0.0
    top: set[str] = set().union(*_keys(retrieved)[:k])
    return len(relevant & top) / len(relevant)


def mrr(retrieved: Sequence[object], gold: Gold) -> float:
    """1/rank of the first relevant item (ranks start at 1), or 0.0 if none was retrieved."""
    relevant = set(_golds(gold))
    return next((1.0 / r for r, keys in enumerate(_keys(retrieved), start=1) if keys & relevant), 0.0)


# -- the registry -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Metric:
    """A named metric: `fn(prediction, target) -> float` in [0, 1], higher is better."""

    name: str
    fn: Callable[[Any, Any], float]
    description: str
    kind: MetricKind = "answer"

    def __call__(self, prediction: Any, target: Any) -> float:
        """Score one prediction."""
        return self.fn(prediction, target)


def _hit(k: int) -> Metric:
    return Metric(f"hit@{k}", lambda r, g: hit_at_k(r, g, k), f"1 if a relevant key is in the top {k}", "retrieval")


def _recall(k: int) -> Metric:
    return Metric(
        f"recall@{k}",
        lambda r, g: recall_at_k(r, g, k),
        f"fraction of relevant keys in the top {k}",
        "retrieval",
    )


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("exact_match", exact_match, "normalised prediction equals a normalised gold (SQuAD EM)"),
        Metric("f1", token_f1, "SQuAD token F1, best over golds; yes/no must match exactly"),
        Metric("accuracy", accuracy, "a normalised gold is a substring of the normalised prediction"),
        Metric("contains", contains, "a gold's tokens occur as a contiguous run in the prediction's"),
        Metric("last_integer", last_integer, "the last number in the prediction equals the gold number"),
        Metric("label_accuracy", label_accuracy, "first yes/no/maybe in the prediction equals the gold", "label"),
        Metric("mrr", mrr, "reciprocal rank of the first relevant key", "retrieval"),
        *(_hit(k) for k in (1, 2, 5, 10)),
        *(_recall(k) for k in (2, 5, 10, 20)),
    )
}

_AT_K = re.compile(r"(hit|recall)@([1-9]\d*)")


def get_metric(name: str) -> Metric:
    """A metric by name; `hit@k` and `recall@k` work for any positive k.

    Raises:
        FlowcError: `unknown-metric` listing the known names.
    """
    if name in METRICS:
        return METRICS[name]
    m = _AT_K.fullmatch(name)
    if m:
        k = int(m.group(2))
        return _hit(k) if m.group(1) == "hit" else _recall(k)
    raise FlowcError(
        "unknown-metric",
        f"unknown metric '{name}'",
        hint=f"use one of: {', '.join(METRICS)} (or hit@k / recall@k for any k)",
    )


# -- helpers ------------------------------------------------------------------------------------


def _as_text(value: object) -> str:
    # Typed outputs may be ints, bools or None; score their text rather than fail mid-evaluation.
    return "" if value is None else value if isinstance(value, str) else str(value)


def _golds(gold: object) -> list[str]:
    if isinstance(gold, str):
        return [gold]
    if isinstance(gold, Sequence | set | frozenset):
        return [_as_text(g) for g in gold]
    return [_as_text(gold)]


def _keys(retrieved: Sequence[object]) -> list[set[str]]:
    """The keys each retrieved item answers to: a string itself; a document its id and title."""
    if isinstance(retrieved, str):
        raise FlowcError(
            "invalid-value",
            "a retrieval metric got one string instead of a ranked list",
            hint="pass the retrieved ids, titles or documents as a list, best first",
        )
    return [_item_keys(item) for item in retrieved]


def _item_keys(item: object) -> set[str]:
    if isinstance(item, str):
        return {item}
    doc = getattr(item, "doc", item)  # a Hit carries its document
    if isinstance(doc, Mapping):
        found = {doc.get("id"), doc.get("title")}
    else:
        found = {getattr(doc, "id", None), getattr(doc, "title", None)}
    keys = {str(v) for v in found if v is not None and v != ""}
    if not keys:
        raise FlowcError(
            "invalid-value",
            f"a retrieval metric cannot find an id or a title in {type(item).__name__} {str(item)[:60]!r}",
            hint="pass ids or titles, or documents with an 'id' or 'title' field",
        )
    return keys
