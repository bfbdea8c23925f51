"""Prompt flow's Jinja prompt files → flowc templates.

A Prompt flow prompt is a Jinja template whose rendered text is split into chat messages at role
lines (`# system:`, `# user:`, `assistant:` ...; see promptflow-tools' `parse_chat`). flowc templates
have placeholders only, and a node sends one system and one user message, so:

- `{{ x }}`, `{{ x.field }}`, `{{ x["field"] }}` become `{{x}}` / `{{x.field}}` (a name flowc
  reserves gets a '_', as the node's input does);
- a string literal `{{ "{{" }}` becomes its text; `{# comments #}` disappear (as when Jinja renders);
- every other Jinja construct (`{% for %}`, `{% if %}`, `{% set %}`, filters, calls, expressions)
  is refused with an error at its line and column, naming the construct;
- a `system` section becomes the node's system prompt and one `user` section its prompt; any other
  role (an `assistant` turn, a `function` or `tool` message) is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flowc.errors import Diagnostic
from flowc.interop.promptflow.reading import flowc_name
from flowc.source import SourceFile

#: What promptflow-tools' parse_chat accepts as a role line: an optional '#', the role, a colon.
_ROLE_LINE = re.compile(r"^[ \t]*#?[ \t]*(system|user|assistant|function|tool)[ \t]*:[ \t]*$", re.I | re.M)
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_SIMPLE = re.compile(rf"^({_NAME})(?:\.({_NAME})|\[\s*(['\"])({_NAME})\3\s*\])?$")
_STRING = re.compile(r"""^(['"])((?:(?!\1).)*)\1$""", re.S)
_BLOCKS = {
    "for": "'for' loop",
    "if": "'if' block",
    "set": "'set' assignment",
    "macro": "'macro'",
    "call": "'call' block",
    "filter": "'filter' block",
    "with": "'with' block",
    "include": "'include'",
    "import": "'import'",
    "from": "'import'",
    "extends": "'extends' (template inheritance)",
    "block": "'block'",
    "raw": "'raw' block",
}
_CLOSERS = ("end", "else", "elif")


@dataclass(frozen=True)
class ChatTemplate:
    """A converted prompt file: the system prompt (if any), the user prompt, and the names it reads."""

    system: str | None
    prompt: str
    variables: tuple[str, ...]


@dataclass
class _Converted:
    text: str = ""
    variables: list[str] = field(default_factory=list)


def _construct(expr: str) -> str:
    """What a `{{ ... }}` expression that is not a plain name is, in words."""
    if "|" in expr:
        name = expr.split("|", 1)[1].strip().split("(")[0].strip()
        return f"filter '{name}'" if name else "filter"
    if "(" in expr:
        return f"call '{expr}'"
    if "[" in expr:
        return f"subscript '{expr}'"
    if re.fullmatch(rf"{_NAME}(\.{_NAME}){{2,}}", expr):
        return f"attribute chain '{expr}' (a placeholder reaches one field)"
    if " if " in f" {expr} ":
        return f"conditional expression '{expr}'"
    return f"expression '{expr}'"


def _convert_section(source: SourceFile, start: int, end: int, diags: list[Diagnostic]) -> _Converted:
    """Convert `source.text[start:end]`, reporting unsupported Jinja at its own place."""
    text = source.text
    out = _Converted()
    pieces: list[str] = []
    pos = start
    tag = re.compile(r"\{\{|\{%|\{#")
    while pos < end:
        m = tag.search(text, pos, end)
        if m is None:
            pieces.append(text[pos:end])
            break
        pieces.append(text[pos : m.start()])
        opener = m.group()
        closer = {"{{": "}}", "{%": "%}", "{#": "#}"}[opener]
        close = text.find(closer, m.end(), end)
        if close < 0:
            diags.append(
                Diagnostic(
                    "template-jinja",
                    f"'{opener}' is never closed with '{closer}'",
                    source.span_at(m.start(), 2),
                    hint=f"close it with '{closer}'",
                )
            )
            break
        inner = text[m.end() : close]
        after = close + 2
        if opener == "{#":
            if after < end and text[after] == "\n":  # Prompt flow renders with trim_blocks
                after += 1
            pos = after
            continue
        trim_left = inner.startswith("-")
        trim_right = inner.endswith("-")
        body = inner.strip("-").strip()
        span = source.span_at(m.start(), close + 2 - m.start())
        if opener == "{%":
            word = body.split(None, 1)[0] if body else ""
            if not word.startswith(_CLOSERS):
                what = _BLOCKS.get(word, f"the statement '{word}'")
                diags.append(
                    Diagnostic(
                        "template-jinja",
                        f"the Jinja {what} cannot be converted: flowc templates have placeholders only",
                        span,
                        hint="compute the value in a node before this one and bind it as an input, "
                        "or write the text out without Jinja control flow",
                    )
                )
            pos = after
            continue
        if trim_left and pieces:
            pieces[-1] = pieces[-1].rstrip()
        simple = _SIMPLE.match(body)
        literal = _STRING.match(body)
        if simple:
            name, attr = flowc_name(simple.group(1)), simple.group(2) or simple.group(4)
            pieces.append(f"{{{{{name}.{attr}}}}}" if attr else f"{{{{{name}}}}}")
            if name not in out.variables:
                out.variables.append(name)
        elif literal and "{{" not in literal.group(2):
            pieces.append(literal.group(2))
        else:
            diags.append(
                Diagnostic(
                    "template-jinja",
                    f"the Jinja {_construct(body)} cannot be converted: a flowc placeholder is a name or name.field",
                    span,
                    hint="compute the value in a node before this one and bind it as an input",
                )
            )
        pos = after
        if trim_right:
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
    out.text = "".join(pieces)
    return out


def convert_prompt(source: SourceFile) -> tuple[ChatTemplate | None, list[Diagnostic]]:
    """Convert one Prompt flow prompt file; None (with errors) when it cannot be converted."""
    diags: list[Diagnostic] = []
    text = source.text
    markers = list(_ROLE_LINE.finditer(text))
    sections: list[tuple[str, int, int, int]] = []  # role, content start, content end, marker offset
    if not markers:
        sections.append(("user", 0, len(text), 0))
    else:
        lead = text[: markers[0].start()]
        if _strip_comments(lead).strip():
            diags.append(
                Diagnostic(
                    "import-unsupported",
                    "text before the first role line belongs to no message",
                    source.span_at(len(lead) - len(lead.lstrip()), 1),
                    hint="start the file with '# system:' or '# user:'",
                )
            )
        for i, mk in enumerate(markers):
            body_start = mk.end() + 1 if mk.end() < len(text) and text[mk.end()] == "\n" else mk.end()
            body_end = markers[i + 1].start() if i + 1 < len(markers) else len(text)
            sections.append((mk.group(1).lower(), body_start, body_end, mk.start()))
    converted = [(role, _convert_section(source, s, e, diags), at) for role, s, e, at in sections]
    if any(d.code == "template-jinja" for d in diags):
        return None, diags  # the role structure is checked once the Jinja is gone (loops hold turns)
    system: str | None = None
    prompt: str | None = None
    variables: list[str] = []
    for role, conv, at in converted:
        span = source.span_at(at + (len(text[at:]) - len(text[at:].lstrip(" \t"))), 1)
        if role == "system" and system is None and prompt is None:
            system = conv.text.strip()
        elif role == "user" and prompt is None:
            prompt = conv.text.strip()
        elif role == "user" or role == "system":
            diags.append(
                Diagnostic(
                    "import-unsupported",
                    f"a second '{role}' message: a flowc node sends one system and one user message",
                    span,
                    hint="merge the messages into one, or split the conversation over several nodes",
                )
            )
        else:
            diags.append(
                Diagnostic(
                    "import-unsupported",
                    f"an '{role}' message cannot be converted: a flowc node sends one system and one user message",
                    span,
                    hint="turn worked examples into demos of the node, or drop the turn"
                    if role == "assistant"
                    else "flowc has no function or tool messages",
                )
            )
        for v in conv.variables:
            if v not in variables:
                variables.append(v)
    if prompt is None and not any(d.severity == "error" for d in diags):
        diags.append(
            Diagnostic(
                "import-unsupported",
                "the prompt has no 'user' message",
                source.span_at(0, 1),
                hint="add a '# user:' line before the text the model should answer",
            )
        )
    if any(d.severity == "error" for d in diags) or prompt is None:
        return None, diags
    return ChatTemplate(system or None, prompt, tuple(variables)), diags


def _strip_comments(text: str) -> str:
    return re.sub(r"\{#.*?#\}", "", text, flags=re.S)
