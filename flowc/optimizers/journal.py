"""The call journal of an optimization job: every answered LM call, appended as it happens.

On resume, a request found in the journal is answered from it (the n-th identical request gets the
n-th recorded answer), so the work of an interrupted step is not paid for twice and the resumed job
sees exactly the answers the uninterrupted one would have.

Each checkpoint of the job saves how many calls the journal held (`entries`); on resume, those calls
belong to steps the saved state already holds, so they are consumed (`consume_first`), not replayed
to a later request that happens to be identical (which would leave the resumed job's call count short
of the uninterrupted one's): only the calls of the interrupted step are answered from the journal.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

from flowc.runtime.lm import LMClient, LMRequest, LMResponse


class JournaledLM:
    def __init__(self, inner: LMClient, path: Path) -> None:
        self.inner = inner
        self.path = path
        self._recorded: dict[str, list[LMResponse]] = defaultdict(list)
        self._seen: dict[str, int] = defaultdict(int)
        self.replayed = 0
        self._order: list[str] = []  # the key of every journaled call, in journal order
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a kill
                self._recorded[row["key"]].append(LMResponse.model_validate(row["response"]))
                self._order.append(row["key"])
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")

    def totals(self) -> tuple[int, int, float]:
        """Calls, tokens and dollars of every journaled call (charged in earlier sessions)."""
        calls = tokens = 0
        usd = 0.0
        for responses in self._recorded.values():
            for r in responses:
                if not r.cached:
                    calls += 1
                    tokens += r.total_tokens
                    usd += r.cost_usd
        return calls, tokens, usd

    @property
    def entries(self) -> int:
        """How many calls the journal holds (earlier sessions' and this one's)."""
        return len(self._order)

    def consume_first(self, n: int) -> None:
        """On resume from a checkpoint taken when the journal held `n` calls: those calls are in the
        saved state, so never answer a later request with them."""
        for key in self._order[:n]:
            self._seen[key] += 1

    async def complete(self, request: LMRequest) -> LMResponse:
        key = request.key()
        n = self._seen[key]
        self._seen[key] += 1
        if n < len(self._recorded[key]):
            self.replayed += 1
            return self._recorded[key][n]
        response = await self.inner.complete(request)
        self._append(key, request.node, response)
        return response

    def record(self, request: LMRequest, response: LMResponse) -> None:
        """Journal a call answered elsewhere (a Ray worker, flowc.distributed.scoring) as if it had
        been made through this client, so resumed jobs count it."""
        key = request.key()
        self._seen[key] += 1
        self._append(key, request.node, response)

    def _append(self, key: str, node: str | None, response: LMResponse) -> None:
        self._recorded[key].append(response)
        self._order.append(key)
        self._fh.write(json.dumps({"key": key, "node": node, "response": response.model_dump()}) + "\n")
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()
