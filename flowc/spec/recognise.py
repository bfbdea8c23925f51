"""Is this file a flowc spec at all? Asked before any diagnostic may quote the file's text.

A spec's diagnostics show its lines, which is what makes them useful; a file that is not a spec
(`import "/proc/self/environ" as env`, a key file, a config with passwords) must never be shown.
So both front ends first look for the mark of a spec: a `.flow` file begins with `import` or
`pipeline` (or a near miss such as `pipline`, so a typo still gets a did-you-mean), a YAML or
JSON file has a `pipeline` key. A file without it is reported as not-a-spec, by path only.
"""

from __future__ import annotations

import difflib
import re

from flowc.errors import Diagnostic
from flowc.source import SourceFile, Span

_FIRST_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: A top-level `pipeline:` key (also as a list item, which yaml-not-mapping explains), a quoted
#: "pipeline" key of JSON however indented, or one in a flow mapping.
_YAML_PIPELINE_KEY = re.compile(
    r"""^(?:-[ \t]+)?["']?pipeline["']?[ \t]*:|^[ \t]*"pipeline"[ \t]*:|[{,][ \t]*["']?pipeline["']?[ \t]*:""", re.M
)


def looks_like_flow(text: str) -> bool:
    """The first word that is not in a comment is `import` or `pipeline`, or close to one."""
    for line in text.lstrip("\ufeff").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        m = _FIRST_WORD.match(stripped)
        if m is None:
            return False
        word = m.group(0)
        return word in ("import", "pipeline") or bool(difflib.get_close_matches(word, ("import", "pipeline"), 1, 0.7))
    return True  # blank or comments only: reported as a file with no pipeline


def looks_like_yaml_spec(text: str) -> bool:
    """The text has a `pipeline` key (see _YAML_PIPELINE_KEY). Empty text (or only comments) is
    reported as empty instead."""
    if all(not ln.strip() or ln.lstrip().startswith("#") for ln in text.splitlines()):
        return True
    return _YAML_PIPELINE_KEY.search(text) is not None


def shown_sources(diags: list[Diagnostic], path: str, source: SourceFile) -> dict[str, SourceFile]:
    """The sources a SpecErrors may quote: none when the file is not a spec."""
    return {} if any(d.code == "not-a-spec" for d in diags) else {path: source}


def not_a_spec(path: str, what: str) -> Diagnostic:
    """The diagnostic for a file that is not a spec: its path and what is missing, never its text."""
    return Diagnostic(
        "not-a-spec",
        f"'{path}' is not a flowc spec ({what}); its content is not shown",
        Span(path, 1, 1),  # the front ends raise it without the file's text, so no line is quoted
        hint="check the path: a spec is a .flow file ('pipeline <name> { ... }') or a YAML/JSON file "
        "with a 'pipeline:' key",
    )
