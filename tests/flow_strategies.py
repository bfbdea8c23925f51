"""Hypothesis strategies for valid spec models (valid as models: names resolve or not, the shape
is right), used by the round-trip and fuzz tests.

`pipelines()` draws a `Pipeline` with every construct the language has: imports, named types
(records, enums, optional, lists), inputs with defaults and descriptions, outputs with bindings
(names, node outputs, literals, `all`, `??`), models with every setting, corpora, all five node
kinds (llm with multi-line prompts, placeholders, demos, routes and fallbacks; retrieve; tool;
subflow; map with a body), loops with `while` conditions, metrics and tests.
"""

from __future__ import annotations

import json
import re
import string
from typing import Any

from hypothesis import strategies as st

from flowc.spec.exprs import BoolOp, Coalesce, Compare, Expr, History, Lit, Not, Ref
from flowc.spec.models import RESERVED, Pipeline

#: Words the `.flow` grammar or the expression languages give a meaning to.
KEYWORDS = RESERVED | {
    "pipeline",
    "import",
    "as",
    "type",
    "model",
    "corpus",
    "node",
    "loop",
    "metric",
    "test",
    "max",
    "while",
    "demo",
    "do",
    "expect",
    "matches",
    "list",
    "enum",
    "route",
}

_FIRST = string.ascii_letters + "_"
_REST = string.ascii_letters + string.digits + "_"

# Names that begin with a keyword or a constant (`truest`, `nullable`, `notable`) must stay names
# in every position: a lexer that matched the keyword first would split them in two.
_KEYWORD_PREFIXED = st.builds(
    lambda a, b: a + b,
    st.sampled_from(sorted(KEYWORDS)),
    st.text(_REST, min_size=1, max_size=3),
)
names = st.one_of(
    st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(_REST, max_size=8)),
    _KEYWORD_PREFIXED,
).filter(lambda s: s not in KEYWORDS)

# Text with the characters that break printers: quotes, backslashes, braces, unicode, tabs.
_ALPHABET = st.characters(
    codec="utf-8",
    exclude_categories=("Cs", "Cc", "Zl", "Zp"),
) | st.sampled_from([*"\"\\{}#'`:- \t", "é", "ß", "→", "日", "😀"])
line_text = st.lists(st.text(_ALPHABET, max_size=6) | st.sampled_from(['"""', "\\n", "日本", "{{x}}"]), max_size=5).map(
    "".join
)
single_line = line_text
multi_line = st.lists(line_text, min_size=1, max_size=5).map("\n".join)
any_text = st.one_of(single_line, multi_line, st.sampled_from(["", " ", "x\n", "  indented\n  more", "a\\nb"]))

_finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(10**12), 10**12), _finite, any_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.one_of(names, single_line), inner, max_size=3),
    ),
    max_leaves=4,
)


# -- types --------------------------------------------------------------------------------------

_enum_value = st.one_of(names, st.text(string.ascii_letters + " -_.,'", min_size=1, max_size=8), line_text.filter(bool))


def _type_text(leaves: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        record = st.dictionaries(names, inner, min_size=1, max_size=3).map(
            lambda d: "{" + ", ".join(f"{k}: {v}" for k, v in d.items()) + "}"
        )
        return st.one_of(
            inner.map(lambda t: f"list[{t}]"),
            inner.filter(lambda t: not t.endswith("?")).map(lambda t: f"{t}?"),
            record,
        )

    return st.recursive(leaves, extend, max_leaves=4)


def _enum(word: str) -> st.SearchStrategy[str]:
    def show(v: str) -> str:
        return v if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) else json.dumps(v, ensure_ascii=False)

    return st.lists(_enum_value, min_size=1, max_size=4, unique=True).map(
        lambda vs: f"{word}[" + ", ".join(show(v) for v in vs) + "]"
    )


def types(named: list[str] | None = None) -> st.SearchStrategy[str]:
    leaves = st.sampled_from(["str", "int", "float", "bool", "any", "Doc", *(named or [])]) | _enum("enum")
    return _type_text(leaves)


# -- expressions --------------------------------------------------------------------------------

refs = st.one_of(
    names.map(lambda n: Ref(0, None, n)),
    st.tuples(names, names).map(lambda t: Ref(0, t[0], t[1])),
)
_literal_values = st.one_of(st.none(), st.booleans(), st.integers(-1000, 10**9), _finite, single_line)
operands: st.SearchStrategy[Expr] = st.one_of(
    refs,
    st.tuples(names, names).map(lambda t: History(0, Ref(0, t[0], t[1]))),
    _literal_values.map(lambda v: Lit(0, v)),
)
bindings = st.lists(operands, min_size=1, max_size=3).map(
    lambda ops: ops[0] if len(ops) == 1 else Coalesce(0, tuple(ops))
)


def _cond_extend(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    return st.one_of(
        st.tuples(st.sampled_from(["and", "or"]), st.lists(inner, min_size=2, max_size=3)).map(
            lambda t: BoolOp(0, t[0], tuple(t[1]))
        ),
        inner.map(lambda e: Not(0, e)),
    )


_compare = st.tuples(bindings, st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "contains"]), bindings).map(
    lambda t: Compare(0, t[0], t[1], t[2])
)
conditions = st.recursive(st.one_of(_compare, bindings), _cond_extend, max_leaves=4)


def text_of(e: Expr) -> str:
    return str(e)


# -- prompts ------------------------------------------------------------------------------------


@st.composite
def prompts(draw: st.DrawFn, ports: list[str]) -> str:
    """Multi-line text with `{{port}}` placeholders (some with a field), quotes and unicode."""
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        parts = []
        for _ in range(draw(st.integers(0, 3))):
            if ports and draw(st.booleans()):
                p = draw(st.sampled_from(ports))
                parts.append("{{" + p + ("." + draw(names) if draw(st.booleans()) else "") + "}}")
            else:
                parts.append(draw(line_text).replace("{{", "{ {"))
        lines.append(draw(st.sampled_from(["", "  ", "\t"])) + " ".join(parts))
    text = "\n".join(lines)
    return text or "Answer."


# -- declarations ---------------------------------------------------------------------------------


@st.composite
def models(draw: st.DrawFn) -> dict[str, Any]:
    m: dict[str, Any] = {
        "id": draw(st.sampled_from(["local/smollm2", "openai/gpt-4o-mini"]) | single_line.filter(bool))
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "temperature": st.floats(0.0, 2.0),
        "max_tokens": st.integers(1, 10**6),
        "seed": st.integers(-(2**31), 2**31),
        "retries": st.integers(0, 20),
        "timeout": st.none() | st.floats(0.01, 1e4),
        "rpm": st.integers(1, 10**6),
        "tpm": st.integers(1, 10**9),
        "fallbacks": st.lists(single_line, max_size=3),
        "api_base": single_line,
        "adapter": single_line,
        "trainable": st.booleans(),
    }
    for k, strat in optional.items():
        if draw(st.booleans()):
            m[k] = draw(strat)
    return m


@st.composite
def llm_nodes(draw: st.DrawFn, model_names: list[str], node_names: list[str]) -> dict[str, Any]:
    ports = draw(st.lists(names, max_size=3, unique=True))
    outputs = draw(st.dictionaries(names, types(), max_size=3))
    node: dict[str, Any] = {
        "kind": "llm",
        "prompt": draw(prompts(ports)),
        "inputs": {p: text_of(draw(bindings)) for p in ports},
    }
    if draw(st.booleans()):
        node["role"] = draw(single_line)
    if model_names and draw(st.booleans()):
        node["model"] = draw(st.sampled_from(model_names))
    if draw(st.booleans()):
        node["system"] = draw(st.one_of(any_text, prompts(ports)))
    if node_names and draw(st.booleans()):
        choices = draw(st.lists(st.sampled_from(node_names), min_size=1, max_size=3, unique=True))
        outputs[draw(names)] = "route[" + ", ".join(choices) + "]"
        if draw(st.booleans()):
            node["fallback"] = draw(st.sampled_from(choices))
    node["outputs"] = outputs
    if draw(st.booleans()):
        node["format"] = draw(st.sampled_from(["auto", "json", "tagged", "text"]))
    fields = ports + list(outputs)
    node["demos"] = draw(
        st.lists(st.dictionaries(st.sampled_from(fields) if fields else names, json_values, max_size=3), max_size=2)
    )
    if draw(st.booleans()):
        node["trainable"] = draw(st.booleans())
    if draw(st.booleans()):
        node["criteria"] = draw(st.lists(any_text, max_size=2))
    if draw(st.booleans()):
        node["description"] = draw(any_text)
    return node


@st.composite
def other_nodes(draw: st.DrawFn, kind: str, corpus_names: list[str], import_names: list[str]) -> dict[str, Any]:
    node: dict[str, Any] = {"kind": kind}
    if kind == "retrieve":
        node["corpus"] = draw(st.sampled_from(corpus_names) if corpus_names else names)
        if draw(st.booleans()):
            node["method"] = draw(st.sampled_from(["bm25", "dense", "maxsim"]))
        if draw(st.booleans()):
            node["k"] = draw(st.integers(1, 1000))
        if draw(st.booleans()):
            node["skip_seen"] = draw(st.booleans())
        node["inputs"] = {"query": text_of(draw(bindings))}
    elif kind == "tool":
        node["function"] = draw(names)
        node["inputs"] = {p: text_of(draw(bindings)) for p in draw(st.lists(names, max_size=2, unique=True))}
        node["outputs"] = draw(st.dictionaries(names, types(), max_size=2))
    else:
        node["flow"] = draw(st.sampled_from(import_names) if import_names else names)
        node["inputs"] = {p: text_of(draw(bindings)) for p in draw(st.lists(names, max_size=2, unique=True))}
    if draw(st.booleans()):
        node["description"] = draw(any_text)
    return node


@st.composite
def pipelines(draw: st.DrawFn) -> Pipeline:
    """A valid Pipeline model drawing on every construct of the language."""
    pool = draw(st.lists(names.filter(lambda n: n not in RESERVED), min_size=2, max_size=8, unique=True))
    node_names = pool[: draw(st.integers(1, len(pool)))]
    model_names = draw(st.lists(names, max_size=2, unique=True))
    corpus_names = draw(st.lists(names, max_size=2, unique=True))
    import_names = draw(st.lists(names, max_size=2, unique=True))
    type_names = [n for n in draw(st.lists(names, max_size=2, unique=True)) if n not in ("Doc",)]
    data: dict[str, Any] = {"pipeline": draw(names)}
    if draw(st.booleans()):
        data["description"] = draw(any_text)
    if draw(st.booleans()):  # optimizer settings: any JSON value under a setting's name
        settings = st.dictionaries(names, json_values, max_size=3)
        data["optimize"] = draw(st.dictionaries(names, settings, min_size=1, max_size=2))
    data["imports"] = {n: draw(single_line.filter(bool)) for n in import_names}
    data["types"] = {n: draw(types()) for n in type_names}
    data["inputs"] = {}
    for n in draw(st.lists(names, max_size=3, unique=True)):
        decl: dict[str, Any] = {"type": draw(types(type_names))}
        if draw(st.booleans()):
            decl["default"] = draw(json_values.filter(lambda v: v is not None))
        if draw(st.booleans()):
            decl["description"] = draw(any_text)
        data["inputs"][n] = decl
    data["outputs"] = {}
    for n in draw(st.lists(names, max_size=3, unique=True)):
        out: dict[str, Any] = {"source": text_of(draw(bindings))}
        if draw(st.booleans()):
            out["type"] = draw(types(type_names))
        if draw(st.booleans()):
            out["description"] = draw(any_text)
        data["outputs"][n] = out
    data["models"] = {n: draw(models()) for n in model_names}
    data["corpora"] = {}
    for n in corpus_names:
        c: dict[str, Any] = {"path": draw(single_line.filter(bool))}
        if draw(st.booleans()):
            c["description"] = draw(any_text)
        data["corpora"][n] = c
    data["nodes"] = {}
    for n in node_names:
        kind = draw(st.sampled_from(["llm", "llm", "retrieve", "tool", "subflow", "map"]))
        if kind == "llm":
            data["nodes"][n] = draw(llm_nodes(model_names, node_names))
        elif kind == "map":
            body_kind = draw(st.sampled_from(["llm", "retrieve", "tool", "subflow"]))
            body = (
                draw(llm_nodes(model_names, []))
                if body_kind == "llm"
                else draw(other_nodes(body_kind, corpus_names, import_names))
            )
            m: dict[str, Any] = {"kind": "map", "over": text_of(draw(bindings)), "body": body}
            if draw(st.booleans()):
                m["item"] = draw(names)
            if draw(st.booleans()):
                m["max_items"] = draw(st.integers(1, 100))
            data["nodes"][n] = m
        else:
            data["nodes"][n] = draw(other_nodes(kind, corpus_names, import_names))
    data["loops"] = {}
    for n in draw(st.lists(names, max_size=2, unique=True)):
        lp: dict[str, Any] = {
            "from": draw(st.sampled_from(node_names)),
            "to": draw(st.sampled_from(node_names)),
            "max": draw(st.integers(1, 1000)),
        }
        if draw(st.booleans()):
            lp["while"] = text_of(draw(conditions))
        data["loops"][n] = lp
    data["metrics"] = {
        n: {
            "fn": draw(st.sampled_from(["exact_match", "f1", "accuracy"]) | names),
            "output": draw(names),
            "target": draw(names),
        }
        for n in draw(st.lists(names, max_size=2, unique=True))
    }
    data["tests"] = {}
    for n in draw(st.lists(names, max_size=2, unique=True)):
        data["tests"][n] = {
            "inputs": draw(st.dictionaries(names, json_values, max_size=2)),
            "expect": [
                {"output": draw(names), "op": draw(st.sampled_from(["==", "!=", "contains", "matches"])), "value": v}
                for v in draw(st.lists(json_values, max_size=2))
            ],
        }
    return Pipeline.model_validate(data)
