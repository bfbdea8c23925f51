"""Secret scrubbing for every text flowc shows or stores about an error: model errors and
diagnostics alike. Stdlib only, below every other layer, so any layer may use it.

A value counts as secret when it comes from an environment variable whose name says it is one
(`OPENAI_API_KEY`, `HF_TOKEN`, `DB_PASSWORD`, ...) and is long enough not to match by chance.
"""

from __future__ import annotations

import os

_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_MIN_LENGTH = 8


def scrub(text: str) -> str:
    """Replace any secret-looking environment value that leaked into `text` with ***."""
    for name, value in os.environ.items():
        if len(value) >= _MIN_LENGTH and any(m in name.upper() for m in _SECRET_MARKERS) and value in text:
            text = text.replace(value, "***")
    return text
