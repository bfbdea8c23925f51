"""The native transport's HTTP: one pooled aiohttp session per event loop, and one POST.

The only module that imports aiohttp, and `native` imports it on the first call that reaches the
network, so a run answered from the response cache never loads it (~0.2 s of start-up).

The session keeps connections alive between calls and is shared by every client in the process.
It is closed when its loop shuts down: it registers a suspended async generator, which
`asyncio.run` (and pytest's runners) close in `shutdown_asyncgens`, inside the loop, before the
loop is gone. Proxies are read from the usual environment variables by the caller; `trust_env`
stays off because it would also read ~/.netrc, whose passwords could reach a spec's host.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp

CONNECTIONS = 256  # per session: beyond this, requests queue for a free connection


class Timeout(Exception):
    """No complete answer within the time allowed."""


class BrokenBody(Exception):
    """The connection broke while the answer's body was arriving."""


class Unreachable(Exception):
    """No answer at all: refused, reset, closed, DNS, TLS."""


_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[aiohttp.ClientSession, Any]] = (
    weakref.WeakKeyDictionary()
)
_last: tuple[asyncio.AbstractEventLoop | None, aiohttp.ClientSession | None] = (None, None)
_timeouts: dict[float | None, aiohttp.ClientTimeout] = {}


async def post(
    url: str, body: bytes, headers: Mapping[str, str], timeout_s: float | None, proxy: str | None
) -> tuple[int, bytes, Mapping[str, str]]:
    """POST `body` to `url`; returns (status, body, headers) of the answer.

    Raises:
        Timeout, BrokenBody, Unreachable: what went wrong on the wire (the caller types them).
    """
    timeout = _timeouts.get(timeout_s)
    if timeout is None:
        timeout = _timeouts[timeout_s] = aiohttp.ClientTimeout(total=timeout_s)
    session = await _session()
    try:
        async with session.post(url, data=body, headers=headers, timeout=timeout, proxy=proxy) as resp:
            return resp.status, await resp.read(), resp.headers
    except TimeoutError as e:
        raise Timeout(str(e)) from e
    except aiohttp.ClientPayloadError as e:
        raise BrokenBody(str(e) or type(e).__name__) from e
    except (aiohttp.ClientError, OSError) as e:
        raise Unreachable(str(e) or type(e).__name__) from e


async def _session() -> aiohttp.ClientSession:
    """The running loop's session, created on its first call."""
    global _last
    loop = asyncio.get_running_loop()
    if _last[0] is loop and _last[1] is not None and not _last[1].closed:
        return _last[1]
    entry = _sessions.get(loop)
    if entry is None or entry[0].closed:
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=CONNECTIONS, ttl_dns_cache=300),
            trust_env=False,
        )
        keeper = _close_with_loop(session)
        await keeper.__anext__()
        entry = (session, keeper)
        _sessions[loop] = entry
    _last = (loop, entry[0])
    return entry[0]


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncIterator[None]:
    try:
        yield
    finally:
        await session.close()
