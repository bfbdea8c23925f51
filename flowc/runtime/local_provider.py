"""The embedded local provider: GGUF models served in process on the CPU through xllamacpp.

`flowc.runtime.transports.embedded` calls these models directly (through `ModelClient`'s retries,
limits and error mapping, like any model); this module only loads and serves the weights.
Model ids:

- `local/<profile>`: a profile of `local_profiles.PROFILES` (smollm2, qwen-coder-0.5b, ...);
- `local/gguf:<absolute path>`: any GGUF file, e.g. a fine-tuned model exported by flowc.

A request may carry a LoRA adapter (`LMRequest.adapter`); `adapters.py` checks and applies it.

One `xllamacpp.Server` is loaded per file and adapter, lazily, and kept for the life of the process. Its
calls block, so they run in a small thread pool of their own, off the event loop. Calls to one
model are limited to its number of slots (`n_parallel`, default 1): on a 2-core CPU llama.cpp's
parallel slots gave no more tokens per second than one slot fed serially (measured: 105 vs 95
tok/s for 8 requests of 64 tokens), and a queue inside flowc keeps waiting calls cancellable.
Each call is streamed internally, so a call whose caller timed out or was cancelled stops
decoding at the next token instead of holding the slot until max_tokens.

`serve_model()` serves one model as an OpenAI-compatible HTTP server on 127.0.0.1 (llama.cpp's
own server, built into xllamacpp) so several processes can share one loaded model.

llama-cpp-python is not used even when installed: xllamacpp is a declared dependency, thread-safe
and ships a server, so one code path serves both uses.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowc.errors import FlowcError
from flowc.runtime import adapters
from flowc.runtime.lm import LoraAdapter
from flowc.runtime.local_profiles import PROFILES, gguf_path

PROVIDER = "local"
_GGUF_PREFIX = "gguf:"


@dataclass(frozen=True)
class LocalModelOptions:
    """How an embedded model is loaded.

    Attributes:
        n_ctx: context length in tokens; None = the profile's (2048 for a bare GGUF file).
        n_parallel: llama.cpp slots, i.e. calls decoded together (1 is fastest on 2 cores).
        n_threads: CPU threads; None = `$FLOWC_LOCAL_THREADS` if set, else llama.cpp's default
            (all cores). Several replicas on one machine (Ray workers) must share the cores:
            llama.cpp's threads wait for each other at every layer, so oversubscribed cores stall
            every replica.
    """

    n_ctx: int | None = None
    n_parallel: int = 1
    n_threads: int | None = field(default_factory=lambda: default_threads())


def default_threads() -> int | None:
    """`$FLOWC_LOCAL_THREADS` (a positive integer), or None for llama.cpp's default."""
    raw = os.environ.get("FLOWC_LOCAL_THREADS", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise FlowcError(
            "invalid-value",
            f"FLOWC_LOCAL_THREADS={raw!r} is not a positive integer",
            hint="set it to the CPU threads each embedded model may use (e.g. 2), or unset it",
        )
    return int(raw)


def resolve_model_path(model: str) -> Path:
    """The GGUF file behind a `local/...` model id.

    Raises:
        FlowcError: model-file-not-found, with the install command or the path checked.
    """
    name = model.removeprefix(f"{PROVIDER}/")
    if name.startswith(_GGUF_PREFIX):
        path = Path(name[len(_GGUF_PREFIX) :])
        if not path.is_absolute():
            raise FlowcError(
                "model-file-not-found",
                f"'{model}': the path of a GGUF model must be absolute",
                hint=f"write local/gguf:{path.resolve()}",
            )
        if not path.is_file():
            raise FlowcError(
                "model-file-not-found",
                f"'{model}': no file at {path}",
                hint="check the path, or export the fine-tuned model to GGUF first",
            )
        return path
    if name not in PROFILES:
        raise FlowcError(
            "model-file-not-found",
            f"'{model}': no local model profile '{name}'",
            hint=f"use local/<profile> with one of: {', '.join(PROFILES)}, "
            "or local/gguf:<absolute path to a .gguf file>",
        )
    return gguf_path(name)


def _context_for(model: str, options: LocalModelOptions) -> int:
    if options.n_ctx is not None:
        return options.n_ctx
    name = model.removeprefix(f"{PROVIDER}/")
    return PROFILES[name].context if name in PROFILES else 2048


def _params(path: Path, n_ctx: int, options: LocalModelOptions, port: int = 0, host: str = "127.0.0.1") -> Any:
    import xllamacpp

    p = xllamacpp.CommonParams()
    p.model.path = str(path)
    # With a unified KV cache every slot may use the whole context, instead of n_ctx / n_parallel.
    p.n_ctx = n_ctx
    p.kv_unified = True
    p.n_parallel = options.n_parallel
    if options.n_threads is not None:
        p.cpuparams.n_threads = options.n_threads
        p.cpuparams_batch.n_threads = options.n_threads
    p.verbosity = -1  # llama.cpp logs every slot and timing line otherwise
    p.port = port
    p.hostnames = [host]
    return p


@dataclass
class LoadedModel:
    """One GGUF file loaded into an in-process llama.cpp server, with its call queue."""

    path: Path
    server: Any  # xllamacpp.Server
    n_parallel: int
    pool: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        # One thread per slot: more would only queue inside llama.cpp, where a waiting call can
        # no longer be cancelled.
        self.pool = ThreadPoolExecutor(max_workers=self.n_parallel, thread_name_prefix="flowc-local")

    def chat(
        self, body: dict[str, Any], deadline: float | None = None, cancel: threading.Event | None = None
    ) -> dict[str, Any]:
        """One blocking chat completion (OpenAI request dict in, response dict out).

        The call is streamed internally so that it can stop between two tokens: when `cancel`
        is set (the caller gave up) or `deadline` (time.monotonic) passes, decoding stops and the
        model's slot is free for the calls queued behind it. llama.cpp's own time limit
        (`t_max_predict_ms`) cannot do this: it only fires after a newline. A call that only
        starts after its deadline is skipped.
        """
        if deadline is not None and time.monotonic() >= deadline:
            return _timeout_result("timed out waiting for the model")
        parts: list[str] = []
        state: dict[str, Any] = {"finish": None, "usage": None, "error": None, "id": None, "stopped": False}

        def on_chunk(chunk: dict[str, Any]) -> bool:
            if "error" in chunk:
                state["error"] = chunk["error"]
                return True
            state["id"] = state["id"] or chunk.get("id")
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    parts.append(content)
                if choice.get("finish_reason"):
                    state["finish"] = choice["finish_reason"]
            if chunk.get("usage"):
                state["usage"] = chunk["usage"]
            if (cancel is not None and cancel.is_set()) or (deadline is not None and time.monotonic() >= deadline):
                state["stopped"] = True
                return True  # tells llama.cpp to stop this generation
            return False

        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        self.server.handle_chat_completions(streamed, on_chunk)
        if state["error"] is not None:
            return {"error": state["error"]}
        if state["stopped"]:
            return _timeout_result("stopped: the caller's deadline passed or it gave up")
        return {
            "id": state["id"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(parts)},
                    "finish_reason": state["finish"],
                }
            ],
            "usage": state["usage"] or {},
        }


def _timeout_result(message: str) -> dict[str, Any]:
    return {"error": {"code": 408, "type": "timeout", "message": message}}


# (file, adapter sha256 or "") -> loaded model: one instance per base file and adapter.
_models: dict[tuple[Path, str], LoadedModel] = {}
# (model id, adapter sha256 or "") -> loaded model, so the hot path skips resolving and checking files.
_by_id: dict[tuple[str, str], LoadedModel] = {}
_models_lock = threading.Lock()


def loaded(model: str, adapter: LoraAdapter | None = None) -> LoadedModel | None:
    """The instance already loaded for `model` with `adapter`, if any (no I/O)."""
    return _by_id.get((model, adapter.sha256 if adapter else ""))


def load(model: str, options: LocalModelOptions | None = None, adapter: LoraAdapter | None = None) -> LoadedModel:
    """The loaded model behind `model` (a `local/...` id) with `adapter`, loading it on first use.

    Later calls return the same instance whatever `options` they pass: one loaded copy per
    file and adapter per process. An adapter is loaded only after its files are checked
    (`adapters.check_files`).
    """
    key = adapter.sha256 if adapter else ""
    found = _by_id.get((model, key))
    if found is not None:
        return found
    path = resolve_model_path(model).resolve()
    with _models_lock:
        loaded = _models.get((path, key))
        if loaded is None:
            import xllamacpp

            opts = options or LocalModelOptions()
            params = _params(path, _context_for(model, opts), opts)
            if adapter is not None:
                adapters.check_files(model, path, adapter)
                adapters.apply(params, adapter)
            try:
                server = xllamacpp.Server(params)
            except Exception as e:
                raise FlowcError(
                    "model-file-not-found",
                    f"'{model}': llama.cpp could not load {path}: {e}",
                    hint="check that the file is a complete GGUF model",
                ) from e
            loaded = LoadedModel(path, server, opts.n_parallel)
            _models[(path, key)] = loaded
        _by_id[(model, key)] = loaded
    return loaded


def chat_body(messages: list[Any], optional_params: dict[str, Any]) -> dict[str, Any]:
    """The llama.cpp chat request for OpenAI-style `messages` and settings (`extra_body` holds a constraint)."""
    body: dict[str, Any] = {"messages": messages}
    for key in ("temperature", "max_tokens", "seed", "stop", "top_p", "top_k", "response_format"):
        if key in optional_params and optional_params[key] is not None:
            body[key] = optional_params[key]
    for key in ("grammar", "json_schema"):  # a decoding constraint (constraints.py), via extra_body
        value = (optional_params.get("extra_body") or {}).get(key)
        if value is not None:
            body[key] = value
    if "max_completion_tokens" in optional_params and "max_tokens" not in body:
        body["max_tokens"] = optional_params["max_completion_tokens"]
    return body


def timeout_seconds(value: Any) -> float | None:
    """A call's timeout in seconds, from a number or an httpx.Timeout (its read limit)."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    total = getattr(value, "read", None)  # an httpx.Timeout
    return float(total) if isinstance(total, int | float) else None


def warm(model: str) -> None:
    """Load `model` now, e.g. before timing calls, so the first call does not pay for loading."""
    load(model)


# -- serving over HTTP ----------------------------------------------------------------------


@dataclass
class ServedModel:
    """A running OpenAI-compatible server for one local model; `stop()` shuts it down."""

    model: str
    base_url: str  # http://127.0.0.1:PORT/v1, the api_base for `openai/<name>` models
    _server: Any = field(repr=False)

    def stop(self) -> None:
        """Stop listening and free the model (idempotent)."""
        # xllamacpp stops its HTTP thread and frees the weights when the Server is destroyed;
        # this object holds the only reference.
        server, self._server = self._server, None
        del server


def serve_model(
    profile_or_path: str,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    options: LocalModelOptions | None = None,
) -> ServedModel:
    """Serve a local model as an OpenAI-compatible HTTP server (llama.cpp's, in this process).

    Other processes then call it as `openai/<anything>` with
    `api_base=<ServedModel.base_url>`, sharing one loaded copy of the model. The server runs in
    background threads until `stop()` (or the process ends); `flowc serve-model` blocks on it.

    Args:
        profile_or_path: a profile name (`smollm2`), a `local/...` model id, or a GGUF file path.
        host: the interface to bind; keep the default 127.0.0.1 unless you mean to expose it.
        port: the TCP port; 0 picks a free one (read it from `base_url`).
        options: context length, slots (several processes share it: use n_parallel > 1 for
            concurrent callers) and threads.

    Returns:
        A `ServedModel` with the `base_url` to call and a `stop()` method.

    Raises:
        FlowcError: model-file-not-found when the model cannot be found or loaded.
    """
    import xllamacpp

    model = _as_model_id(profile_or_path)
    path = resolve_model_path(model)
    opts = options or LocalModelOptions()
    try:
        server = xllamacpp.Server(_params(path, _context_for(model, opts), opts, port=port, host=host))
    except Exception as e:
        raise FlowcError(
            "model-file-not-found",
            f"'{model}': llama.cpp could not serve {path}: {e}",
            hint="check the file, and that the port is free",
        ) from e
    address = str(server.listening_address).rstrip("/")
    return ServedModel(model, address + "/v1", server)


@contextmanager
def served(profile_or_path: str, **kwargs: Any) -> Iterator[ServedModel]:
    """`serve_model` as a context manager that stops the server on exit."""
    srv = serve_model(profile_or_path, **kwargs)
    try:
        yield srv
    finally:
        srv.stop()


def _as_model_id(profile_or_path: str) -> str:
    if profile_or_path.startswith(f"{PROVIDER}/"):
        return profile_or_path
    if profile_or_path in PROFILES:
        return f"{PROVIDER}/{profile_or_path}"
    return f"{PROVIDER}/{_GGUF_PREFIX}{Path(profile_or_path).resolve()}"


def serve_forever(served_model: ServedModel, *, stop: Callable[[], bool] | None = None) -> None:
    """Block until `stop()` returns True (polled every 0.2 s), Ctrl-C or SIGTERM, then stop the server.

    SIGTERM (what `kill PID` and process managers send) is turned into the same clean stop as
    Ctrl-C while this runs on the main thread; the previous handler is restored afterwards.
    """
    terminated = threading.Event()
    previous: Any = None
    on_main = threading.current_thread() is threading.main_thread()
    if on_main:
        previous = signal.signal(signal.SIGTERM, lambda *_: terminated.set())
    try:
        while not terminated.is_set() and (stop is None or not stop()):
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if on_main:
            signal.signal(signal.SIGTERM, previous)
        served_model.stop()
