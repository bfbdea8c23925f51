"""Keeping secrets out of what flowc stores: requests (cached, recorded, traced) may carry no
credential, and error text is scrubbed of secret-looking environment values before it is raised."""

from __future__ import annotations

from flowc.errors import LMError
from flowc.runtime.lm import LMRequest
from flowc.scrub import scrub, treat_as_secret

# scrub and treat_as_secret live in flowc/scrub.py, below every layer: diagnostics use them too
__all__ = ["refuse_credentials", "scrub", "treat_as_secret"]

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
