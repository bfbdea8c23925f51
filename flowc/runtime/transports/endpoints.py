"""Which endpoint a model's requests go to, and which key (if any) goes with them.

A spec is untrusted input, so the key rules are strict (docs/security.md, "Secrets and model
endpoints"):

- A provider's key from the environment (OPENAI_API_KEY, ANTHROPIC_API_KEY, ...) goes only to that
  provider's own endpoints: its default one, or an `api_base` on one of its own hosts over https.
- A custom `api_base` (vLLM, llama.cpp, Ollama, a proxy) gets a key only when the spec names the
  variable that holds it (`api_key_env: "MY_VLLM_KEY"`), and never a provider's key variable: a
  spec cannot send OPENAI_API_KEY to another host by naming it.
- An `api_base` that carries a credential itself (`https://user:secret@host`, `?api_key=...`) is
  refused: the spec's text is copied into artifacts, lockfiles and traces.

Base URLs configured in the user's own environment (OPENAI_BASE_URL) are the user's choice, not
the spec's, and keep the provider's key. Nothing here does I/O or imports a provider library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import urlsplit

from flowc.errors import LMError
from flowc.runtime.secrets import treat_as_secret
from flowc.spec.endpoints import ENV_NAME, credential_problem

__all__ = ["ENV_NAME", "Credential", "credential_for", "credential_problem", "is_loopback", "is_own_host"]

# provider -> (the env variables holding its key, in the order they are tried; its own hosts: an
# exact host, or a suffix starting with '.'). Providers not listed get no key with a custom api_base.
PROVIDERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "openai": (("OPENAI_API_KEY",), ("api.openai.com",)),
    "azure": (("AZURE_API_KEY", "AZURE_OPENAI_API_KEY"), (".openai.azure.com", ".cognitiveservices.azure.com")),
    "anthropic": (("ANTHROPIC_API_KEY",), ("api.anthropic.com",)),
    "gemini": (("GEMINI_API_KEY", "GOOGLE_API_KEY"), ("generativelanguage.googleapis.com",)),
    "mistral": (("MISTRAL_API_KEY",), ("api.mistral.ai",)),
    "groq": (("GROQ_API_KEY",), ("api.groq.com",)),
    "together_ai": (("TOGETHERAI_API_KEY", "TOGETHER_API_KEY", "TOGETHER_AI_API_KEY"), ("api.together.xyz",)),
    "deepseek": (("DEEPSEEK_API_KEY",), ("api.deepseek.com",)),
    "openrouter": (("OPENROUTER_API_KEY", "OR_API_KEY"), ("openrouter.ai",)),
    "fireworks_ai": (("FIREWORKS_AI_API_KEY", "FIREWORKS_API_KEY"), ("api.fireworks.ai",)),
    "xai": (("XAI_API_KEY",), ("api.x.ai",)),
    "cohere": (("COHERE_API_KEY", "CO_API_KEY"), ("api.cohere.ai", "api.cohere.com")),
    "perplexity": (("PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"), ("api.perplexity.ai",)),
    "huggingface": (("HF_TOKEN", "HUGGINGFACE_API_KEY"), (".huggingface.co", ".hf.space")),
}

OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
# Loopback servers (flowc serve-model, vLLM, llama.cpp on this machine) need no key.
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def provider_of(model: str) -> str:
    """The provider prefix of a model id (`openai/gpt-4o-mini` -> `openai`); no prefix means openai."""
    return model.split("/", 1)[0] if "/" in model else "openai"


def provider_key_vars() -> frozenset[str]:
    """Every provider key variable flowc knows, which `api_key_env` may not name for a foreign host."""
    return frozenset(v for keys, _ in PROVIDERS.values() for v in keys)


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""


def is_loopback(url: str) -> bool:
    return host_of(url) in _LOOPBACK_HOSTS


def is_own_host(provider: str, url: str) -> bool:
    """Whether `url` is one of `provider`'s own endpoints, reached over https."""
    if not url.lower().startswith("https://"):
        return False
    host = host_of(url)
    hosts = PROVIDERS.get(provider, ((), ()))[1]
    return any(host.endswith(h) if h.startswith(".") else host == h for h in hosts)


@dataclass(frozen=True)
class Credential:
    """Where a model's key comes from: `env` is the variable (None: send no key).

    `named` says the spec named the variable (api_key_env), so a missing value is the spec's
    variable to set rather than the provider's."""

    env: str | None
    named: bool = False

    def value(self) -> str | None:
        return os.environ.get(self.env) if self.env else None


NO_KEY = Credential(None)


def credential_for(model: str, api_base: str | None, api_key_env: str | None, *, env_base: bool = False) -> Credential:
    """The key that may go with requests for `model` to `api_base` (None: the provider's default).

    Args:
        env_base: the base URL came from the user's environment (e.g. OPENAI_BASE_URL), not the spec.

    Raises:
        LMError: lm-auth when the spec names a provider's key variable for a host that is not that
            provider's, or names a variable that is not a variable name.
    """
    provider = provider_of(model)
    if api_key_env is not None:
        if not ENV_NAME.match(api_key_env):
            raise LMError(
                "lm-auth",
                f"api_key_env '{api_key_env}' is not an environment variable name",
                model=model,
                hint='name the variable that holds the key, e.g. api_key_env: "MY_VLLM_KEY"',
            )
        foreign = api_base is not None and not is_own_host(provider, api_base)
        if foreign and api_key_env in provider_key_vars():
            raise LMError(
                "lm-auth",
                f"refusing to send {api_key_env} to {host_of(api_base or '') or api_base}: it is a provider's key "
                "and that host is not the provider's",
                model=model,
                hint=f"keep the key for this server in its own variable (export MY_SERVER_KEY=...) and name it "
                f"with api_key_env; {api_key_env} goes only to its provider's own endpoints",
            )
        treat_as_secret(api_key_env)
        return Credential(api_key_env, named=True)
    if api_base is None or env_base or is_own_host(provider, api_base):
        keys = PROVIDERS.get(provider, ((), ()))[0]
        present = next((k for k in keys if os.environ.get(k)), None)
        return Credential(present or (keys[0] if keys else None))
    return NO_KEY


def key_hint(model: str, credential: Credential) -> str:
    """The variable(s) to name in an auth error's hint."""
    if credential.env is not None:
        return credential.env
    keys = PROVIDERS.get(provider_of(model), ((), ()))[0]
    return " or ".join(keys) or "the provider's API key variable"
