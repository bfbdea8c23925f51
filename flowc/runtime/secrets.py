"""Keeping secrets out of what flowc stores: requests (cached, recorded, traced) may carry no
credential, and error text is scrubbed of secret-looking environment values before it is raised."""

from __future__ import annotations

import os

from flowc.errors import LMError
from flowc.runtime.lm import LMRequest

_CREDENTIAL_ARGS = frozenset(
    {
        "api_key",
        "api_secret",
        "azure_ad_token",
        "aws_secret_access_key",
        "aws_session_token",
        "vertex_credentials",
        "headers",
        "extra_headers",
    }
)


def refuse_credentials(request: LMRequest) -> None:
    """Requests are cached, recorded and traced, so they must never carry a credential."""
    found = sorted(_CREDENTIAL_ARGS.intersection(request.extra))
    if found:
        raise LMError(
            "lm-bad-request",
            f"the request's extra settings carry credentials or headers ({', '.join(found)}); "
            "requests are cached, recorded and traced, so they may not",
            node=request.node,
            model=request.model,
            hint="set the provider's API key in the environment (e.g. OPENAI_API_KEY) instead",
        )


_SECRET_MARKERS = ("KEY", "TOKEN", "SECRET", "PASSWORD")
# Variables a spec named as holding a key (api_key_env), whatever their names look like.
_named: set[str] = set()


def treat_as_secret(env_name: str) -> None:
    """Scrub the value of `env_name` from error text from now on (a model's api_key_env)."""
    _named.add(env_name)


def scrub(text: str) -> str:
    """Replace any secret-looking environment value that leaked into `text` with ***."""
    for name, value in os.environ.items():
        secret = name in _named or any(m in name.upper() for m in _SECRET_MARKERS)
        if len(value) >= 8 and secret and value in text:
            text = text.replace(value, "***")
    return text
