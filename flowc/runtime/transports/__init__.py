"""How model calls leave the process, side by side, each behind the `LMClient` contract.

- `native`: OpenAI-compatible chat completions over one pooled aiohttp session per event loop
  (OpenAI, and vLLM, llama.cpp, Ollama, LM Studio, TGI or `flowc serve-model` behind an api_base);
- `embedded`: the in-process `local/` models (llama.cpp through xllamacpp);
- `litellm`: every other provider, and models declared `transport: litellm` (the only module
  that imports litellm);
- `endpoints`: which key may go to which endpoint; `catalog`: prices and capabilities read from
  litellm's bundled model map without importing litellm; `base`: what they share.

`flowc.runtime.client.ModelClient` picks the transport per model and owns retries, rate limits
and fallbacks, so every path behaves the same around the call itself.
"""
