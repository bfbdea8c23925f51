"""`flowc explain CODE`: the section of the error reference for one code, from the installed package.

Every diagnostic ends with `see: flowc explain <code>`. The reference is docs/errors.md, shipped
inside the package as flowc/docs/errors.md (a link in the repository), so this works wherever flowc
is installed, without the repository and without a network.
"""

from __future__ import annotations

import argparse
import difflib
import re
import sys
from importlib.resources import files
from typing import Any

from flowc.errors import ERROR_CODES, FlowcError

#: Where the reference is, inside the installed package.
REFERENCE = ("docs", "errors.md")


def register(sub: Any) -> None:
    p = sub.add_parser("explain", help="explain an error code: what it means and how to fix it")
    p.add_argument("code", nargs="?", metavar="CODE", help="an error code, e.g. unknown-node (none: list them)")
    p.set_defaults(func=cmd_explain)


def reference_text() -> str:
    return files("flowc").joinpath(*REFERENCE).read_text(encoding="utf-8")


def section(code: str, text: str) -> str | None:
    """The `## <code>` section of the reference, without the next section's heading or comments."""
    m = re.search(rf"^## {re.escape(code)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    if m is None:
        return None
    body = re.sub(r"^<!--.*?-->\n?", "", m.group(1), flags=re.M)
    return f"{code}\n{'=' * len(code)}\n{body.strip()}\n"


def cmd_explain(args: argparse.Namespace) -> int:
    if not args.code:
        sys.stdout.write("\n".join(ERROR_CODES) + "\n")
        return 0
    code = args.code.strip().removeprefix("error[").removesuffix("]")
    found = section(code, reference_text()) if code in ERROR_CODES else None
    if found is None:
        close = difflib.get_close_matches(code, ERROR_CODES, n=1)
        raise FlowcError(
            "unknown-name",
            f"no error code '{code}'",
            hint=f"did you mean '{close[0]}'?" if close else "'flowc explain' lists the codes",
        )
    sys.stdout.write(found)
    return 0
