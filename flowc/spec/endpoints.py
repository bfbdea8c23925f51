"""What a spec may say about where models live: an `api_base` may not carry a credential, and
`api_key_env` names a variable, never a key. Shared by the spec models (located errors at check
time) and the runtime transports (which refuse the same for policies built in Python)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_SECRET_PARAM = re.compile(r"(key|token|secret|passw|auth|sig|credential)", re.I)

CREDENTIAL_HINT = (
    "remove the credential from the URL; put the key in an environment variable and name it with "
    'api_key_env (e.g. api_key_env: "MY_SERVER_KEY")'
)


def credential_problem(url: str) -> str | None:
    """Why `url` may not be an api_base because it carries a credential, or None when it is clean.

    The message never repeats the credential."""
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
    except ValueError:
        return None  # not a URL at all: the connection will say so
    if user is not None or password is not None:
        return "the URL carries a user name or password before its host (user:secret@host)"
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if _SECRET_PARAM.search(name):
            return f"the URL's query carries a credential-like parameter '{name}'"
    return None
