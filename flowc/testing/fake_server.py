"""A scriptable fake OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) for the OpenAI SDK, litellm and
httpx, runs its own event loop in a background thread and binds a free port, so any number of
tests can use one at a time without clashing::

    with FakeOpenAIServer([Reply.rate_limited(retry_after=0.01), Reply(text="hi")]) as srv:
        client = ModelClient({"openai/fake": ModelPolicy(api_base=srv.base_url)})
        ...
        assert srv.hits == 2

Each request takes the next scripted `Reply`; when the script is used up, `default` answers
(a `Reply`, or a function of the request body returning one). A `Reply` can inject latency, an
HTTP error status (429 with Retry-After, 500, ...), a hang past the client's timeout, malformed
JSON, a body cut off mid-way (the connection closes before Content-Length bytes arrived), a
connection closed without an answer, a truncated answer (finish_reason=length), empty choices or
null content. Every request is recorded with its headers (so tests can see which Authorization
went where) and the number of the connection it came on (so they can see keep-alive reuse). With
the default reply and no latency it is a zero-latency server for measuring client overhead.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


@dataclass(frozen=True)
class Reply:
    """How the fake server answers one request.

    Attributes:
        text: the assistant message content (None sends `"content": null`).
        latency_s: wait this long before answering.
        status: HTTP status; anything but 200 sends an OpenAI-style error body.
        retry_after: with an error status, the Retry-After header in seconds.
        hang: never answer (until the server stops): a client must time out.
        malformed: send a 200 whose body is not JSON.
        cut_body: send a 200 whose body stops half-way, then close the connection.
        reset: close the connection without answering.
        finish_reason: e.g. "length" for a truncated answer.
        empty_choices: send `"choices": []`.
        prompt_tokens, completion_tokens: the usage reported; None = count words.
    """

    text: str | None = "ok"
    latency_s: float = 0.0
    status: int = 200
    retry_after: float | None = None
    hang: bool = False
    malformed: bool = False
    cut_body: bool = False
    reset: bool = False
    finish_reason: str = "stop"
    empty_choices: bool = False
    prompt_tokens: int | None = None
    completion_tokens: int | None = None

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> Reply:
        """A 429 with an optional Retry-After header."""
        return cls(status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        """A 5xx error."""
        return cls(status=status)

    @classmethod
    def hanging(cls) -> Reply:
        """No answer at all; the client's timeout must fire."""
        return cls(hang=True)

    @classmethod
    def connection_reset(cls) -> Reply:
        """The connection closes with no answer."""
        return cls(reset=True)

    @classmethod
    def truncated(cls, text: str = "partial") -> Reply:
        """An answer cut off at max_tokens."""
        return cls(text=text, finish_reason="length")


@dataclass
class Hit:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    connection: int = 0  # which TCP connection (numbered from 1 as accepted) carried it


@dataclass
class FakeOpenAIServer:
    """The server; a context manager. `base_url` ends in /v1, as clients expect."""

    script: Iterable[Reply] = ()
    default: Reply | Callable[[dict[str, Any]], Reply] = field(default_factory=Reply)
    record: bool = True
    host: str = "127.0.0.1"
    hits_log: list[Hit] = field(default_factory=list, init=False)
    port: int = field(default=0, init=False)
    _queue: list[Reply] = field(default_factory=list, init=False)
    _count: int = field(default=0, init=False)
    _connections: int = field(default=0, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _server: asyncio.Server | None = field(default=None, init=False)
    _stopping: asyncio.Event | None = field(default=None, init=False)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._queue = list(self.script)

    # -- control -------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://127.0.0.1:<port>/v1`."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def connections(self) -> int:
        """How many TCP connections the server accepted (keep-alive clients open few)."""
        return self._connections

    @property
    def hits(self) -> int:
        """How many chat-completion requests arrived (also counted when `record` is off)."""
        return self._count

    def push(self, *replies: Reply) -> None:
        """Append replies to the script (thread-safe)."""
        with self._lock:
            self._queue.extend(replies)

    def start(self) -> FakeOpenAIServer:
        """Bind a free port and serve in a background thread; returns self."""
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self._open())
            except BaseException as e:  # report bind errors to the caller's thread
                errors.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-openai-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        """Stop serving: hanging replies end, open connections close, the thread joins."""
        loop = self._loop
        if loop is None or self._thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._close(), loop)
        fut.result(10)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(10)
        self._loop = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- serving (runs on the server's own loop) -----------------------------------------

    async def _open(self) -> None:
        self._stopping = asyncio.Event()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, 0))
        self.port = sock.getsockname()[1]
        self._server = await asyncio.start_server(self._serve_connection, sock=sock)

    async def _close(self) -> None:
        assert self._stopping is not None and self._server is not None
        self._stopping.set()
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            self._count += 1
            if self._queue:
                return self._queue.pop(0)
        return self.default(body) if callable(self.default) else self.default

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._connections += 1
        conn = self._connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        k, v = line.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                length = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(length) if length else b""
                keep_alive = headers.get("connection", "").lower() != "close"
                if not await self._respond(writer, method, path, headers, raw, conn):
                    break
                if not keep_alive:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _respond(
        self, writer: asyncio.StreamWriter, method: str, path: str, headers: dict[str, str], raw: bytes, conn: int
    ) -> bool:
        """Answer one request; False when the connection must close now."""
        if method == "GET" and path.rstrip("/").endswith("/models"):
            self._write(writer, 200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
            return True
        if not path.rstrip("/").endswith("/chat/completions"):
            self._write(writer, 404, _error_body("no such route: " + path, "not_found"))
            return True
        try:
            body = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            self._write(writer, 400, _error_body("request body is not JSON", "invalid_request_error"))
            return True
        reply = self._next_reply(body)
        if self.record:
            self.hits_log.append(Hit(method, path, headers, body, time.monotonic(), conn))
        if reply.hang:
            assert self._stopping is not None
            await self._stopping.wait()
            return False
        if reply.latency_s > 0:
            await asyncio.sleep(reply.latency_s)
        if reply.reset:
            return False
        if reply.status != 200:
            extra = {"retry-after": _fmt_seconds(reply.retry_after)} if reply.retry_after is not None else {}
            kind = "rate_limit_error" if reply.status == 429 else "server_error"
            self._write(writer, reply.status, _error_body(f"fake {reply.status}", kind), extra)
            return True
        if reply.malformed:
            self._write_raw(writer, 200, b'{"id": "x", "choices": [', {})
            return True
        if reply.cut_body:
            data = json.dumps(_completion_body(body, reply)).encode()
            head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(data)}\r\n\r\n"
            writer.write(head.encode("latin-1") + data[: len(data) // 2])
            await writer.drain()
            return False
        self._write(writer, 200, _completion_body(body, reply))
        await writer.drain()
        return True

    def _write(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        payload: dict[str, Any],
        extra: dict[str, str] | None = None,
    ) -> None:
        self._write_raw(writer, status, json.dumps(payload).encode(), extra or {})

    @staticmethod
    def _write_raw(writer: asyncio.StreamWriter, status: int, data: bytes, extra: dict[str, str]) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
            "content-type: application/json",
            f"content-length: {len(data)}",
        ]
        head += [f"{k}: {v}" for k, v in extra.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data)


def _fmt_seconds(s: float) -> str:
    # Retry-After is an integer number of seconds in the HTTP spec, but OpenAI-style clients
    # accept fractions too; fractions keep fault tests fast.
    return str(int(s)) if float(s).is_integer() else f"{s:g}"


def _error_body(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _completion_body(request: dict[str, Any], reply: Reply) -> dict[str, Any]:
    messages = request.get("messages") or []
    prompt_words = sum(len(str(m.get("content", "")).split()) for m in messages if isinstance(m, dict))
    completion_words = len((reply.text or "").split())
    choices = (
        []
        if reply.empty_choices
        else [
            {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": reply.finish_reason,
            }
        ]
    )
    pt = reply.prompt_tokens if reply.prompt_tokens is not None else prompt_words
    ct = reply.completion_tokens if reply.completion_tokens is not None else completion_words
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(request.get("model", "fake")),
        "choices": choices,
        "usage": {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct},
    }


def main() -> None:
    """`python -m flowc.testing.fake_server`: serve zero-latency replies until killed.

    Prints the base URL on the first line of stdout, so a benchmark can start the server in its
    own process (keeping the server's work off the measured process) and stop it by its PID.
    """
    import signal

    srv = FakeOpenAIServer(record=False).start()
    print(srv.base_url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    srv.stop()


if __name__ == "__main__":
    main()
