"""Secret scrubbing for every text flowc shows or stores about an error: model errors and
diagnostics alike. Stdlib only, below every other layer, so any layer may use it.

A value counts as secret when it comes from an environment variable whose name says it is one
(`OPENAI_API_KEY`, `HF_TOKEN`, `DB_PASSWORD`, ...) or that a spec named as holding a key
(`api_key_env`), and is long enough not to match by chance.
"""

from __future__ import annotations

import os

_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
_MIN_LENGTH = 8
# Variables a spec named as holding a key (api_key_env), whatever their names look like.
_named: set[str] = set()


def treat_as_secret(env_name: str) -> None:
    """Scrub the value of `env_name` from error text from now on (a model's api_key_env)."""
    _named.add(env_name)


def scrub(text: str) -> str:
    """Replace any secret-looking environment value that leaked into `text` with ***."""
    for name, value in os.environ.items():
        secret = name in _named or any(m in name.upper() for m in _SECRET_MARKERS)
        if len(value) >= _MIN_LENGTH and secret and value in text:
            text = text.replace(value, "***")
    return text
